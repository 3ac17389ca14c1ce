//! A small TCP load balancer standing in for the registration address (a VIP, DNS name or
//! haproxy in production): round-robin over its backends, skipping those that refuse, and
//! able to go away and come back on the same address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running proxy; stopped (listener and every connection closed) when dropped.
pub struct TcpProxy {
    /// Where clients connect.
    pub address: SocketAddr,
    backends: Arc<Vec<SocketAddr>>,
    stop: CancellationToken,
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TcpProxy {
    /// Listens on `address` (port 0 picks one) and forwards to `backends` in turn.
    pub async fn start(address: SocketAddr, backends: Vec<SocketAddr>) -> TcpProxy {
        let listener = bind(address).await;
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let backends = Arc::new(backends);
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, backends.clone(), stop.clone()));
        TcpProxy {
            address,
            backends,
            stop,
        }
    }

    /// Closes the listener and every open connection: the address is down.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// The same proxy again, on the same address, after [`TcpProxy::stop`].
    pub async fn restart(&mut self) {
        self.stop.cancel();
        let listener = bind(self.address).await;
        self.stop = CancellationToken::new();
        tokio::spawn(serve(listener, self.backends.clone(), self.stop.clone()));
    }
}

/// Binds, retrying for a moment while the old listener of a restart lets go of the port.
async fn bind(address: SocketAddr) -> TcpListener {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the proxy cannot listen on {address}: {last:?}");
}

async fn serve(listener: TcpListener, backends: Arc<Vec<SocketAddr>>, stop: CancellationToken) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((client, _)) = accepted else { continue };
        let backends = backends.clone();
        let next = next.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let Some(server) = connect_any(&backends, &next).await else {
                return;
            };
            let (mut client, mut server) = (client, server);
            tokio::select! {
                () = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}

/// The next backend in turn that accepts a connection.
async fn connect_any(backends: &[SocketAddr], next: &AtomicUsize) -> Option<TcpStream> {
    for _ in 0..backends.len() {
        let index = next.fetch_add(1, Ordering::Relaxed) % backends.len();
        let connect = TcpStream::connect(backends[index]);
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_millis(500), connect).await {
            return Some(stream);
        }
    }
    None
}
