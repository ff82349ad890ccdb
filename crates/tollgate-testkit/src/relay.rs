//! A TCP relay on `127.0.0.1:0` in front of another address (PostgreSQL, say) that a test
//! can cut and restore, to put "the database away for a while" between the server and
//! its database without touching either.
//!
//! Cut: every relayed connection is closed and new ones are accepted and closed at once
//! (the port stays bound, so nothing else can take it and the server's URL stays valid).
//! Restored: new connections are relayed again. Dropping the relay closes everything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::client::ClientResult;

pub struct Relay {
    addr: SocketAddr,
    /// `true` while connections are relayed.
    up: watch::Sender<bool>,
    open: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Relay {
    /// Listens on `127.0.0.1:0` and relays each connection to `target` (`host:port`).
    pub async fn start(target: &str) -> ClientResult<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await.map_err(|e| format!("relay: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("relay: {e}"))?;
        let (up, _) = watch::channel(true);
        let open = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept(listener, target.to_owned(), up.subscribe(), open.clone()));
        Ok(Self { addr, up, open, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes every relayed connection and refuses new ones until [`Relay::restore`].
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    pub fn is_cut(&self) -> bool {
        !*self.up.borrow()
    }

    /// Connections being relayed now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        // The accept task owns the connection tasks' JoinSet: aborting it closes them all.
        self.task.abort();
    }
}

async fn accept(listener: TcpListener, target: String, up: watch::Receiver<bool>, open: Arc<AtomicUsize>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else {
                    // Out of file descriptors or the like: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                };
                if *up.borrow() {
                    connections.spawn(relay(client, target.clone(), up.clone(), open.clone()));
                }
                // Cut: the connection is dropped (closed) as soon as it is accepted.
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn relay(mut client: TcpStream, target: String, mut up: watch::Receiver<bool>, open: Arc<AtomicUsize>) {
    let Ok(mut server) = TcpStream::connect(&target).await else { return };
    // Small protocol messages must not wait for Nagle's algorithm at the relay.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    open.fetch_add(1, Ordering::Relaxed);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
        // Also ends when the relay is dropped (the sender is gone).
        _ = up.wait_for(|up| !*up) => {}
    }
    open.fetch_sub(1, Ordering::Relaxed);
}
