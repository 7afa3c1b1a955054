//! The zero-logic relay: the baseline for what any TCP proxy costs. Bytes are
//! copied both ways with `tokio::io::copy_bidirectional`; nothing is parsed.

use tokio::net::{TcpListener, TcpStream};

/// Accepts connections and relays each to `upstream` until the listener fails.
pub async fn run(listener: TcpListener, upstream: String) -> std::io::Result<()> {
    loop {
        let (mut client, _) = listener.accept().await?;
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(&upstream).await else {
                return;
            };
            // As the gateway does on both legs.
            client.set_nodelay(true).ok();
            server.set_nodelay(true).ok();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
    }
}
