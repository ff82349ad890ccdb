//! `fake-upstream [--listen ADDR] [--no-record]`: runs [`FakeOpenAi`] with `Behavior::Normal`
//! as a standalone process (the benchmark's upstream). Prints exactly one line,
//! `listening on http://IP:PORT`, once it accepts connections, then serves until killed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use tollgate_testkit::fake_openai::{FakeOpenAi, Options};

const USAGE: &str = "usage: fake-upstream [--listen ADDR] [--no-record]";

fn main() -> ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("fake-upstream: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("fake-upstream: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let fake = match FakeOpenAi::start_with(options).await {
            Ok(fake) => fake,
            Err(err) => {
                eprintln!("fake-upstream: cannot listen: {err}");
                return ExitCode::FAILURE;
            }
        };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "listening on http://{}", fake.addr()).and_then(|()| stdout.flush()).is_err() {
            return ExitCode::FAILURE;
        }
        drop(stdout);
        // Serve until killed; Ctrl-C ends it cleanly too.
        let _ = tokio::signal::ctrl_c().await;
        drop(fake);
        ExitCode::SUCCESS
    })
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                options.listen =
                    value.parse::<SocketAddr>().map_err(|err| format!("bad --listen address {value:?}: {err}"))?;
            }
            "--no-record" => options.record = false,
            "-h" | "--help" => return Err("help requested".to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(options)
}
