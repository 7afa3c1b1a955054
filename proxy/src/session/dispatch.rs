//! The command loop's one step: a client command judged, forwarded, its
//! response relayed (masked where a profile says so) and every frame recorded.

use super::*;

impl Session {
    /// Judges a statement against the session's policy (`prepare`: at
    /// COM_STMT_PREPARE), noticing a client that leaves while the statement is
    /// held for approval. The summary's SQL text is lent to the check.
    async fn check_statement(
        &mut self,
        bytes: &[u8],
        analysis: &chaperone_sql::Analysis,
        prepare: bool,
        summary: &mut CommandSummary,
    ) -> Result<crate::guardrails::PreparedGuard, GuardError> {
        let sql_text = summary.sql.take().unwrap_or_default();
        let cmd = SqlCommand {
            bytes,
            sql: &sql_text,
            analysis,
            database: self.database.as_deref(),
            connection_id: self.connection_id,
            prepare,
        };
        let checked = {
            let mut gone = std::pin::pin!(client_gone(&mut self.client, &mut self.pipelined));
            self.guard
                .check_sql(cmd, &mut self.upstream, summary, gone.as_mut())
                .await
        };
        summary.sql = Some(sql_text);
        checked
    }

    /// Handles one command. `Ok(Some(end))` ends the session.
    pub(super) async fn command(&mut self, packet: Packet) -> Result<Option<End>, SessionError> {
        let started = Instant::now();
        let started_ns = now_ns();
        let code = packet.header().unwrap_or(0xFF);
        self.shared
            .metrics
            .commands_total
            .get_or_create(&CommandLabels {
                command: command::name(code),
            })
            .inc();
        self.bytes_from_client += packet.payload.len() as u64;
        self.reply_seq = packet.next_seq();
        self.shared
            .metrics
            .bytes_total
            .get_or_create(&DirectionLabels {
                direction: "client_to_server",
            })
            .inc_by(packet.payload.len() as u64);
        let mut summary = CommandSummary {
            session_id: self.session_id.to_string(),
            command_index: self.command_index,
            started_at_ns: started_ns,
            command: command::name(code).to_string(),
            database: self.database.clone(),
            ..Default::default()
        };
        let frame = self.frame(Direction::ClientToServer, packet.payload.clone());
        if let Err(e) = self.shared.tap.record_request(TapEvent::Frame(frame)) {
            // Fail closed: nothing runs unrecorded.
            self.shared.metrics.error("tap");
            warn!(error = %e, "recording unavailable; command refused");
            let err = ErrInfo::new(
                codes::REFUSED_BY_POLICY,
                "HY000",
                format!("Chaperone: the command was not executed because it cannot be recorded ({e}); retry later"),
            );
            return self.refuse(summary, code, err).await;
        }

        self.response_masker = None;
        let mut forward = packet.payload.clone();
        // COM_STMT_PREPARE: the statement's analysis, kept with it once prepared.
        let mut prepared = None;
        // COM_STMT_PREPARE: its guardrail verdict, bound to its id once prepared.
        let mut prepared_guard = None;
        // COM_QUERY: the database a USE in it switches to.
        let mut use_db: Option<String> = None;
        match code {
            COM_QUIT => {
                self.finish(summary, started, None);
                return Ok(Some(End::ClientQuit));
            }
            _ if command::is_replication(code) => {
                let err = ErrInfo::new(
                    codes::NOT_SUPPORTED,
                    "42000",
                    format!(
                        "Chaperone: {} is refused: replication streams bypass the gateway's recording and masking",
                        command::name(code)
                    ),
                );
                return self.refuse(summary, code, err).await;
            }
            COM_CHANGE_USER => return self.change_user(packet, summary, started).await,
            COM_QUERY => {
                let sql = &packet.payload[1..];
                summary.sql = Some(String::from_utf8_lossy(sql).into_owned());
                let text = summary.sql.as_deref().unwrap_or_default();
                let analysis = AnalysisCache::shared().analyze(text);
                analysis.record_into(&mut summary, self.database.as_deref());
                if self.guard.active() {
                    let checked = self
                        .check_statement(sql, &analysis, false, &mut summary)
                        .await;
                    if let Err(e) = checked {
                        return self.guard_refused(summary, code, e).await;
                    }
                }
                use_db = analysis
                    .statements
                    .iter()
                    .rev()
                    .find_map(|s| s.use_database.clone());
                let sql_text = summary.sql.clone().unwrap_or_default();
                match self.masking.check(&sql_text, self.database.as_deref()) {
                    Ok(lineage) => {
                        self.response_masker = self.masking.masker(
                            false,
                            &lineage,
                            Some(&sql_text),
                            self.database.as_deref(),
                        )
                    }
                    Err(denial) => return self.refuse(summary, code, masking_denied(denial)).await,
                }
                match registry::find_kill(sql, &analysis) {
                    KillInText::Absent => {}
                    KillInText::Alone(kill) => match self.rewrite_kill(kill) {
                        Ok(rewritten) => forward = rewritten,
                        Err(err) => return self.refuse(summary, code, err).await,
                    },
                    KillInText::Embedded => {
                        return self.refuse(summary, code, kill_not_alone()).await;
                    }
                }
            }
            COM_PROCESS_KILL => {
                let id = Reader::new(&packet.payload[1..], "COM_PROCESS_KILL").u32();
                if let Ok(target) = &id {
                    let target = Some((u64::from(*target), self.connection_id));
                    if let Err(e) =
                        self.guard
                            .check_command("COM_PROCESS_KILL", target, &mut summary)
                    {
                        return self.guard_refused(summary, code, e).await;
                    }
                }
                let kill = id.ok().map(|id| registry::Kill {
                    query_only: false,
                    id: id as u64,
                });
                match self.rewrite_kill(kill) {
                    Ok(_) => {
                        let upstream_id = self
                            .shared
                            .registry
                            .get(kill.expect("rewrite succeeded").id as u32)
                            .expect("rewrite succeeded")
                            .upstream_connection_id;
                        let mut p = vec![COM_PROCESS_KILL];
                        p.extend_from_slice(&upstream_id.to_le_bytes());
                        forward = Bytes::from(p);
                    }
                    Err(err) => return self.refuse(summary, code, err).await,
                }
            }
            COM_STMT_PREPARE => {
                summary.sql = Some(String::from_utf8_lossy(&packet.payload[1..]).into_owned());
                let analysis =
                    AnalysisCache::shared().analyze(summary.sql.as_deref().unwrap_or_default());
                analysis.record_into(&mut summary, self.database.as_deref());
                if self.guard.active() {
                    let checked = self
                        .check_statement(&packet.payload[1..], &analysis, true, &mut summary)
                        .await;
                    match checked {
                        Ok(g) => prepared_guard = Some(g),
                        Err(e) => return self.guard_refused(summary, code, e).await,
                    }
                }
                if registry::find_kill(&packet.payload[1..], &analysis) != KillInText::Absent {
                    return self.refuse(summary, code, kill_not_alone()).await;
                }
                prepared = Some(analysis);
                let sql = summary.sql.as_deref().unwrap_or_default();
                match self.masking.check(sql, self.database.as_deref()) {
                    Ok(lineage) => self.masking.prepared(lineage),
                    Err(denial) => return self.refuse(summary, code, masking_denied(denial)).await,
                }
            }
            COM_STMT_EXECUTE => {
                let id = execute::statement_id(&packet.payload).ok();
                let stmt = id.and_then(|id| self.statements.get_mut(&id));
                let Some(stmt) = stmt else {
                    return self.refuse(summary, code, unknown_statement(id)).await;
                };
                summary.statement_id = id;
                summary.sql = Some(stmt.wire.sql.clone());
                if let Some(id) = id {
                    let lineage = self.masking.lineage_of(id);
                    self.response_masker = self.masking.masker(
                        true,
                        &lineage,
                        Some(&stmt.wire.sql),
                        stmt.database.as_deref(),
                    );
                }
                if let Some(a) = &stmt.analysis {
                    a.record_into(&mut summary, stmt.database.as_deref());
                }
                match execute::parse(&packet.payload, &mut stmt.wire) {
                    Ok(exec) => summary.params = exec.params,
                    Err(e) => {
                        self.shared.metrics.error("protocol");
                        warn!(error = %e, "malformed COM_STMT_EXECUTE refused");
                        let err = ErrInfo::new(
                            codes::MALFORMED_PACKET,
                            "08S01",
                            format!("Chaperone: {e}"),
                        );
                        return self.refuse(summary, code, err).await;
                    }
                }
                if self.guard.active() {
                    // Disjoint fields: the statement is read while the guard
                    // and the upstream connection are used, nothing is copied.
                    let stmt = id.and_then(|id| self.statements.get(&id));
                    let params = std::mem::take(&mut summary.params);
                    let checked = {
                        let mut gone =
                            std::pin::pin!(client_gone(&mut self.client, &mut self.pipelined));
                        self.guard
                            .check_execute(
                                stmt.and_then(|s| s.guard.as_ref()),
                                stmt.map_or("", |s| s.wire.sql.as_str()),
                                &params,
                                stmt.and_then(|s| s.analysis.as_deref()),
                                stmt.and_then(|s| s.database.as_deref()),
                                &mut self.upstream,
                                &mut summary,
                                gone.as_mut(),
                            )
                            .await
                    };
                    summary.params = params;
                    if let Err(e) = checked {
                        return self.guard_refused(summary, code, e).await;
                    }
                }
            }
            COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE | COM_STMT_RESET | COM_STMT_FETCH => {
                let id = execute::statement_id(&packet.payload).ok();
                summary.statement_id = id;
                let known = id.and_then(|id| self.statements.get_mut(&id));
                match (code, known) {
                    (COM_STMT_SEND_LONG_DATA, Some(stmt)) => {
                        let param = Reader::new(&packet.payload[5..], "COM_STMT_SEND_LONG_DATA")
                            .u16()
                            .map_err(SessionError::ClientMalformed)?
                            as usize;
                        if let Some(flag) = stmt.wire.long_data.get_mut(param) {
                            *flag = true;
                        }
                    }
                    (COM_STMT_CLOSE, Some(_)) => {
                        self.statements.remove(&id.expect("known"));
                        self.masking.closed(id.expect("known"));
                    }
                    (COM_STMT_RESET, Some(stmt)) => {
                        stmt.wire.long_data.iter_mut().for_each(|f| *f = false);
                    }
                    (COM_STMT_FETCH, Some(_)) => {
                        self.response_masker = id.and_then(|id| self.masking.cursor_masker(id));
                    }
                    // No response to these, whatever happens: drop silently, as
                    // the server would.
                    (COM_STMT_SEND_LONG_DATA | COM_STMT_CLOSE, None) => {
                        self.finish(summary, started, None);
                        return Ok(None);
                    }
                    (_, None) => return self.refuse(summary, code, unknown_statement(id)).await,
                    _ => unreachable!("codes matched above"),
                }
            }
            COM_RESET_CONNECTION => {
                self.statements.clear();
                self.masking.reset();
            }
            COM_INIT_DB => {
                let db = String::from_utf8_lossy(&packet.payload[1..]).into_owned();
                if let Err(e) = self.guard.check_database(&db, &mut summary) {
                    return self.guard_refused(summary, code, e).await;
                }
            }
            COM_FIELD_LIST => {
                let rest = &packet.payload[1..];
                let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
                let table = String::from_utf8_lossy(&rest[..end]).into_owned();
                let database = self.database.clone();
                if let Err(e) =
                    self.guard
                        .check_field_list(database.as_deref(), &table, &mut summary)
                {
                    return self.guard_refused(summary, code, e).await;
                }
            }
            COM_REFRESH | COM_DEBUG => {
                if let Err(e) = self
                    .guard
                    .check_command(command::name(code), None, &mut summary)
                {
                    return self.guard_refused(summary, code, e).await;
                }
            }
            COM_SET_OPTION => self.guard.note_set_option(&packet.payload, &mut summary),
            COM_PING | COM_STATISTICS => {}
            _ => {
                let err = ErrInfo::new(
                    codes::UNKNOWN_COMMAND,
                    "08S01",
                    format!("Chaperone: unknown or unsupported command 0x{code:02X}"),
                );
                return self.refuse(summary, code, err).await;
            }
        }

        // Forward the request, then relay the response.
        let request = Packet::new(0, forward);
        let upstream_seq = request.next_seq();
        self.upstream
            .conn
            .send(request)
            .await
            .map_err(|e| SessionError::Upstream(e.to_string()))?;
        let facts = self.relay_response(code, upstream_seq).await?;
        if let Some(m) = self.response_masker.take() {
            summary.masked_columns = m.masked.iter().cloned().collect();
            if let (COM_STMT_EXECUTE, Some(id)) = (code, summary.statement_id) {
                self.masking.executed(id, m.columns());
            }
        }
        if facts.error.is_none() {
            match code {
                COM_STMT_PREPARE => {
                    if let Some((id, params, columns)) = facts.prepared {
                        self.masking.prepared_id(id);
                        self.statements.insert(
                            id,
                            Prepared {
                                wire: PreparedStatement {
                                    sql: summary.sql.clone().unwrap_or_default(),
                                    num_params: params,
                                    num_columns: columns,
                                    bound_types: None,
                                    long_data: vec![false; params as usize],
                                },
                                analysis: prepared.take(),
                                database: self.database.clone(),
                                guard: prepared_guard.take(),
                            },
                        );
                        summary.statement_id = Some(id);
                    }
                }
                COM_INIT_DB => {
                    self.database =
                        Some(String::from_utf8_lossy(&packet.payload[1..]).into_owned());
                }
                COM_QUERY => {
                    if let Some(db) = use_db.take().or_else(|| use_database(&packet.payload[1..])) {
                        self.database = Some(db);
                    }
                }
                _ => {}
            }
        }
        self.finish(summary, started, Some(facts));
        Ok(None)
    }

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
            let packet = match self.upstream.conn.next().await {
                Some(Ok(p)) => p,
                Some(Err(e)) => return Err(SessionError::Upstream(e.to_string())),
                None => {
                    return Err(SessionError::Upstream(
                        "the database closed the connection".into(),
                    ))
                }
            };
            if packet.seq != upstream_seq {
                return Err(SessionError::Upstream(format!(
                    "packet sequence out of order: expected {upstream_seq}, got {}",
                    packet.seq
                )));
            }
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
                    None => {
                        let err =
                            ErrInfo::new(codes::NOT_SUPPORTED, "42000", local_infile_refusal(None));
                        let payload = Bytes::from(err.encode());
                        let frame = self.frame(Direction::ServerToClient, payload.clone());
                        self.shared.tap.record(TapEvent::Frame(frame));
                        self.client
                            .send(Packet::new(client_seq, payload))
                            .await
                            .map_err(SessionError::Client)?;
                        let mut facts = exchange.into_facts();
                        facts.error = Some(err);
                        return Ok(facts);
                    }
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

    /// A command the guardrails did not let through: refused with their
    /// error, or the session ends when the upstream broke during an EXPLAIN.
    pub(super) async fn guard_refused(
        &mut self,
        summary: CommandSummary,
        code: u8,
        e: GuardError,
    ) -> Result<Option<End>, SessionError> {
        match e {
            GuardError::Refuse(err) => self.refuse(summary, code, err).await,
            GuardError::Upstream(m) => Err(SessionError::Upstream(m)),
            GuardError::ClientGone => {
                // Recorded with its verdict and how long it was held; nothing
                // to answer, nobody listens.
                let held = now_ns().saturating_sub(summary.started_at_ns).max(0) as u64;
                let started = Instant::now()
                    .checked_sub(Duration::from_nanos(held))
                    .unwrap_or_else(Instant::now);
                self.finish(summary, started, None);
                Ok(Some(End::ClientDisconnected))
            }
        }
    }

    /// Answers a command with an error without forwarding it.
    pub(super) async fn refuse(
        &mut self,
        mut summary: CommandSummary,
        _code: u8,
        err: ErrInfo,
    ) -> Result<Option<End>, SessionError> {
        let payload = Bytes::from(err.encode());
        let frame = self.frame(Direction::ServerToClient, payload.clone());
        self.shared.tap.record(TapEvent::Frame(frame));
        self.bytes_to_client += payload.len() as u64;
        self.client
            .send(Packet::new(self.reply_seq, payload))
            .await
            .map_err(SessionError::Client)?;
        self.shared.metrics.error("refused");
        summary.refused = true;
        summary.error_code = Some(err.code);
        summary.error_message = Some(err.message);
        self.command_index += 1;
        self.shared.tap.record(TapEvent::Command(Box::new(summary)));
        Ok(None)
    }

    pub(super) fn finish(
        &mut self,
        mut summary: CommandSummary,
        started: Instant,
        facts: Option<ResponseFacts>,
    ) {
        let elapsed = started.elapsed();
        self.shared
            .metrics
            .bytes_total
            .get_or_create(&DirectionLabels {
                direction: "server_to_client",
            })
            .inc_by(self.bytes_to_client - self.bytes_to_client_reported);
        self.bytes_to_client_reported = self.bytes_to_client;
        self.shared
            .metrics
            .command_duration_seconds
            .observe(elapsed.as_secs_f64());
        if let Some(f) = facts {
            summary.rows_returned = f.rows;
            summary.rows_affected = f.affected_rows;
            summary.last_insert_id = f.last_insert_id;
            summary.warnings = f.warnings;
            summary.result_columns = f.columns;
            summary.result_hash = f.result_hash;
            self.guard.observe_status(f.status);
            if let Some(e) = f.error {
                summary.error_code = Some(e.code);
                summary.error_message = Some(e.message);
            }
        }
        summary.duration_ns = elapsed.as_nanos() as u64;
        self.command_index += 1;
        self.shared.tap.record(TapEvent::Command(Box::new(summary)));
    }

    /// Maps a client-visible connection id in KILL to the upstream one.
    pub(super) fn rewrite_kill(&self, kill: Option<registry::Kill>) -> Result<Bytes, ErrInfo> {
        let Some(kill) = kill else {
            return Err(ErrInfo::new(
                codes::NOT_SUPPORTED,
                "42000",
                "Chaperone: only KILL [CONNECTION | QUERY] <connection id> is supported through the gateway",
            ));
        };
        let live = u32::try_from(kill.id)
            .ok()
            .and_then(|id| self.shared.registry.get(id))
            .ok_or_else(|| {
                ErrInfo::new(
                    codes::NO_SUCH_THREAD,
                    "HY000",
                    format!("Unknown thread id: {}", kill.id),
                )
            })?;
        let me = &self.grant.identity;
        if live.owner != (me.issuer.clone(), me.subject.clone()) || live.target != self.grant.target
        {
            return Err(ErrInfo::new(
                codes::KILL_DENIED,
                "HY000",
                format!("You are not owner of thread {}", kill.id),
            ));
        }
        let sql = format!(
            "KILL {}{}",
            if kill.query_only {
                "QUERY "
            } else {
                "CONNECTION "
            },
            live.upstream_connection_id
        );
        let mut p = vec![COM_QUERY];
        p.extend_from_slice(sql.as_bytes());
        Ok(Bytes::from(p))
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

/// Strict masking refused a statement.
pub(super) fn masking_denied(denial: chaperone_masking::Denial) -> ErrInfo {
    ErrInfo::new(codes::REFUSED_BY_POLICY, "42000", denial.0)
}

/// A KILL the gateway cannot rewrite to the server's connection id (see
/// [`KillInText::Embedded`]).
pub(super) fn kill_not_alone() -> ErrInfo {
    ErrInfo::new(
        codes::NOT_SUPPORTED,
        "42000",
        "Chaperone: KILL must be sent as a query of its own (not with other statements, \
         not prepared, not as dynamic SQL): the gateway maps the connection id it names",
    )
}

pub(super) fn unknown_statement(id: Option<u32>) -> ErrInfo {
    ErrInfo::new(
        codes::UNKNOWN_STMT_HANDLER,
        "HY000",
        format!(
            "Unknown prepared statement handler ({}) given to the gateway",
            id.map_or("?".to_string(), |i| i.to_string())
        ),
    )
}

/// The database a successful `USE db` switched to.
pub(super) fn use_database(sql: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(sql)
        .ok()?
        .trim()
        .trim_end_matches(';')
        .trim();
    let (kw, rest) = s.split_once(|c: char| c.is_ascii_whitespace())?;
    if !kw.eq_ignore_ascii_case("use") {
        return None;
    }
    let db = rest.trim();
    let db = db
        .strip_prefix('`')
        .and_then(|d| d.strip_suffix('`'))
        .map(|d| d.replace("``", "`"))
        .unwrap_or_else(|| db.to_string());
    (!db.is_empty() && !db.contains(char::is_whitespace)).then_some(db)
}
