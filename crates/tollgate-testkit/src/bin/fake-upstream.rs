//! `fake-upstream [--listen ADDR] [--no-record] [--anthropic]`: runs [`FakeOpenAi`] (or,
//! with `--anthropic`, [`FakeAnthropic`]: the Messages API, JSON answers with usage) with
//! its normal behavior as a standalone process (the benchmark's upstream). Prints exactly
//! one line, `listening on http://IP:PORT`, once it accepts connections, then serves until
//! killed.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;

use tollgate_testkit::fake_anthropic::{self, FakeAnthropic};
use tollgate_testkit::fake_openai::{self, FakeOpenAi};

const USAGE: &str = "usage: fake-upstream [--listen ADDR] [--no-record] [--anthropic]";

/// What the command line asks for.
struct Args {
    listen: Option<SocketAddr>,
    record: bool,
    anthropic: bool,
}

/// Either fake, kept alive while it serves.
enum Running {
    OpenAi(FakeOpenAi),
    Anthropic(FakeAnthropic),
}

impl Running {
    async fn start(args: &Args) -> std::io::Result<Self> {
        if args.anthropic {
            let mut options = fake_anthropic::Options { record: args.record, ..Default::default() };
            if let Some(listen) = args.listen {
                options.listen = listen;
            }
            return FakeAnthropic::start_with(options).await.map(Self::Anthropic);
        }
        let mut options = fake_openai::Options { record: args.record, ..Default::default() };
        if let Some(listen) = args.listen {
            options.listen = listen;
        }
        FakeOpenAi::start_with(options).await.map(Self::OpenAi)
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Self::OpenAi(fake) => fake.addr(),
            Self::Anthropic(fake) => fake.addr(),
        }
    }
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(args) => args,
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
        let fake = match Running::start(&args).await {
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

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args { listen: None, record: true, anthropic: false };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                let addr =
                    value.parse::<SocketAddr>().map_err(|err| format!("bad --listen address {value:?}: {err}"))?;
                parsed.listen = Some(addr);
            }
            "--no-record" => parsed.record = false,
            "--anthropic" => parsed.anthropic = true,
            "-h" | "--help" => return Err("help requested".to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(parsed)
}
