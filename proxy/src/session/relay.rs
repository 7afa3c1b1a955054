//! The server's response to a forwarded command, relayed packet by packet as
//! it arrives (masked where the role says so), each packet recorded as the
//! client got it; and LOAD DATA LOCAL INFILE, relayed only where allowed.

use bytes::Bytes;
use chaperone_mysql::protocol::command::COM_PING;
use chaperone_mysql::protocol::exchange::{Exchange, ResponseFacts, Step};
use chaperone_mysql::protocol::response::{codes, ErrInfo};
use chaperone_mysql::protocol::{CapabilityFlags, Packet, PacketError};
use chaperone_schemas::{Direction, TapEvent};
use futures::{SinkExt, StreamExt};
use tracing::warn;

use super::{read_packet, Session, SessionError};

impl Session {
    /// Reads the server's response to the command just forwarded and relays it.
    /// `upstream_seq` is the sequence id the server's first packet must have.
    pub(super) async fn relay_response(
        &mut self,
        code: u8,
        mut upstream_seq: u8,
    ) -> Result<ResponseFacts, SessionError> {
        let mut exchange = Exchange::new(
            code,
            self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF),
        );
        let mut client_seq = self.reply_seq;
        let mut infile_refusal = None;
        let mut masker = self.response_masker.take();
        while !exchange.is_done() {
            let packet = self.next_upstream(upstream_seq).await?;
            upstream_seq = packet.next_seq();
            let step = exchange
                .on_packet(&packet.payload)
                .map_err(|e| SessionError::Upstream(e.to_string()))?;
            if step == Step::LocalInfile {
                match self.local_infile(packet, upstream_seq, client_seq).await? {
                    Some((u, c)) => {
                        upstream_seq = u;
                        client_seq = c;
                        exchange.resume_after_local_infile();
                        continue;
                    }
                    None => return self.local_infile_refused(exchange, client_seq).await,
                }
            }
            let mut payload = packet.payload;
            if let Some(m) = masker.as_mut() {
                // What the client (and so the record) gets: masked values.
                if let Some(masked) = m
                    .on_packet(exchange.last_packet(), &payload)
                    .map_err(|e| SessionError::Upstream(e.to_string()))?
                {
                    payload = Bytes::from(masked);
                }
            }
            if step == Step::Done && !self.local_infile_allowed() {
                // The database refused LOAD DATA LOCAL INFILE because the gateway
                // did not negotiate it: say why, instead of a message that points
                // at the client's settings.
                if let Some(err) = exchange.facts().error.as_ref() {
                    if codes::LOCAL_INFILE_DISABLED.contains(&err.code) {
                        let clear =
                            ErrInfo::new(err.code, &err.sql_state, local_infile_refusal(Some(err)));
                        payload = Bytes::from(clear.encode());
                        infile_refusal = Some(clear);
                    }
                }
            }
            let outgoing = Packet::new(client_seq, payload);
            exchange.delivered(&outgoing.payload);
            client_seq = outgoing.next_seq();
            // Should the database fail mid-response, the client's ERR follows
            // what it already got.
            self.reply_seq = client_seq;
            self.bytes_to_client += outgoing.payload.len() as u64;
            let frame = self.frame(Direction::ServerToClient, outgoing.payload.clone());
            self.shared.tap.record(TapEvent::Frame(frame));
            if step == Step::Done {
                self.client
                    .send(outgoing)
                    .await
                    .map_err(SessionError::Client)?;
            } else {
                self.client
                    .feed(outgoing)
                    .await
                    .map_err(SessionError::Client)?;
            }
        }
        let mut facts = exchange.into_facts();
        if let Some(m) = &masker {
            if let (Some(msg), Some(e)) = (&m.masked_error, facts.error.as_mut()) {
                e.message = msg.clone();
            }
        }
        self.response_masker = masker;
        if infile_refusal.is_some() {
            facts.error = infile_refusal;
        }
        Ok(facts)
    }

    /// The server's next packet of the response, which must have sequence id
    /// `expected`.
    async fn next_upstream(&mut self, expected: u8) -> Result<Packet, SessionError> {
        let packet = match self.upstream.conn.next().await {
            Some(Ok(p)) => p,
            Some(Err(e)) => return Err(SessionError::Upstream(e.to_string())),
            None => {
                return Err(SessionError::Upstream(
                    "the database closed the connection".into(),
                ))
            }
        };
        if packet.seq != expected {
            return Err(SessionError::Upstream(format!(
                "packet sequence out of order: expected {expected}, got {}",
                packet.seq
            )));
        }
        Ok(packet)
    }

    /// The server asked for a local file and the gateway refused: the client
    /// gets an error saying why, and the exchange ends there.
    async fn local_infile_refused(
        &mut self,
        exchange: Exchange,
        client_seq: u8,
    ) -> Result<ResponseFacts, SessionError> {
        let err = ErrInfo::new(codes::NOT_SUPPORTED, "42000", local_infile_refusal(None));
        let payload = Bytes::from(err.encode());
        let frame = self.frame(Direction::ServerToClient, payload.clone());
        self.shared.tap.record(TapEvent::Frame(frame));
        self.client
            .send(Packet::new(client_seq, payload))
            .await
            .map_err(SessionError::Client)?;
        let mut facts = exchange.into_facts();
        facts.error = Some(err);
        Ok(facts)
    }

    /// May this session relay LOAD DATA LOCAL INFILE? Only when its target allows
    /// it and the client negotiated it.
    pub(super) fn local_infile_allowed(&self) -> bool {
        self.shared
            .targets
            .get(&self.grant.target)
            .is_some_and(|t| t.allow_local_infile)
            && self.caps.contains(CapabilityFlags::CLIENT_LOCAL_FILES)
    }

    /// LOAD DATA LOCAL INFILE: the server asked for a file. Relayed only when the
    /// target allows it and the client negotiated it; the gateway never reads a
    /// file itself. Returns the next sequence ids (upstream, client) when relayed,
    /// None when refused (the server got an empty file and its answer was read).
    pub(super) async fn local_infile(
        &mut self,
        request: Packet,
        mut upstream_seq: u8,
        mut client_seq: u8,
    ) -> Result<Option<(u8, u8)>, SessionError> {
        if !self.local_infile_allowed() {
            // Answer the server with an empty file, and tell the client why.
            warn!("database asked for a local file; refused (allow_local_infile is off)");
            self.upstream
                .conn
                .send(Packet::new(upstream_seq, Bytes::new()))
                .await
                .map_err(|e| SessionError::Upstream(e.to_string()))?;
            // Consume the server's answer to the empty file.
            let mut ex = Exchange::new(COM_PING, false);
            while !ex.is_done() {
                match self.upstream.conn.next().await {
                    Some(Ok(p)) => {
                        ex.on_packet(&p.payload)
                            .map_err(|e| SessionError::Upstream(e.to_string()))?;
                    }
                    Some(Err(e)) => return Err(SessionError::Upstream(e.to_string())),
                    None => return Err(SessionError::Upstream("closed".into())),
                }
            }
            return Ok(None);
        }
        let out = Packet::new(client_seq, request.payload);
        client_seq = out.next_seq();
        self.client.send(out).await.map_err(SessionError::Client)?;
        loop {
            let p = match read_packet(&mut self.client)
                .await
                .map_err(SessionError::Client)?
            {
                Some(p) => p,
                None => return Err(SessionError::Client(PacketError::Truncated)),
            };
            let empty = p.payload.is_empty();
            let frame = self.frame(Direction::ClientToServer, p.payload.clone());
            self.shared
                .tap
                .record_request(TapEvent::Frame(frame))
                .map_err(|e| SessionError::Upstream(e.to_string()))?;
            let out = Packet::new(upstream_seq, p.payload);
            upstream_seq = out.next_seq();
            client_seq = client_seq.wrapping_add(1);
            self.upstream
                .conn
                .send(out)
                .await
                .map_err(|e| SessionError::Upstream(e.to_string()))?;
            if empty {
                return Ok(Some((upstream_seq, client_seq)));
            }
        }
    }
}

/// The message of a refused LOAD DATA LOCAL INFILE; `database` is the server's
/// own refusal, when it refused.
pub(super) fn local_infile_refusal(database: Option<&ErrInfo>) -> String {
    let mut message = "Chaperone: LOAD DATA LOCAL INFILE is not allowed through this gateway, which never sends files on a client's behalf (an operator can enable allow_local_infile on the target)".to_string();
    if let Some(err) = database {
        message += &format!(". The database said: {}", err.message);
    }
    message
}
