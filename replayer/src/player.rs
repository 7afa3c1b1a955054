//! The interactive terminal player (ratatui + crossterm): a timeline of the
//! session's statements and, beside it, the current statement with the result
//! its client saw. Frames are loaded for the statement on screen only.
//!
//! Keys: space play/pause · → / n next · ← / p previous · e next error ·
//! + / - speed (0.5× … 100×, max) · / search · ↑ ↓ PgUp PgDn scroll · q quit.

use std::collections::HashMap;
use std::io;
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::terminal::{disable_raw_mode, LeaveAlternateScreen};
use crossterm::ExecutableCommand;
use ratatui::layout::{Constraint, Direction as LayoutDirection, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, List, ListItem, ListState, Paragraph, Wrap};
use ratatui::{DefaultTerminal, Frame};

use crate::archive::{ArchiveError, SessionSource};
use crate::decode::{decode, Decoded};
use crate::model::Statement;
use crate::story::{outcome, table_lines, truncate};

/// Playback speeds; `None` is "as fast as possible".
pub const SPEEDS: [Option<f64>; 9] = [
    Some(0.5),
    Some(1.0),
    Some(2.0),
    Some(5.0),
    Some(10.0),
    Some(25.0),
    Some(50.0),
    Some(100.0),
    None,
];

/// The player's state, independent of the terminal (testable).
pub struct PlayerState {
    pub session_id: String,
    pub statements: Vec<Statement>,
    pub current: usize,
    pub playing: bool,
    pub speed: usize,
    pub scroll: u16,
    /// Typing a search (`/`): the text so far.
    pub search: Option<String>,
    pub last_search: String,
    pub message: String,
    decoded: HashMap<usize, Decoded>,
    /// When the current statement was reached during playback.
    reached: Instant,
}

impl PlayerState {
    pub fn new(session_id: &str, statements: Vec<Statement>) -> Self {
        PlayerState {
            session_id: session_id.to_string(),
            statements,
            current: 0,
            playing: false,
            speed: 1,
            scroll: 0,
            search: None,
            last_search: String::new(),
            message: String::new(),
            decoded: HashMap::new(),
            reached: Instant::now(),
        }
    }

    pub fn speed_label(&self) -> String {
        match SPEEDS[self.speed] {
            Some(s) => format!("{s}x"),
            None => "max".into(),
        }
    }

    fn go(&mut self, i: usize) {
        if i < self.statements.len() {
            self.current = i;
            self.scroll = 0;
            self.reached = Instant::now();
        }
    }

    pub fn next(&mut self) {
        self.go(self.current + 1);
    }

    pub fn prev(&mut self) {
        if self.current > 0 {
            self.go(self.current - 1);
        }
    }

    /// Jumps to the next failed or refused statement (wrapping around).
    pub fn next_error(&mut self) {
        let n = self.statements.len();
        match (1..=n)
            .map(|k| (self.current + k) % n)
            .find(|&i| self.statements[i].is_error())
        {
            Some(i) => {
                self.go(i);
                self.message = format!("error at #{}", self.statements[i].command_index);
            }
            None => self.message = "no errors in this session".into(),
        }
    }

    pub fn find(&mut self, text: &str) {
        let n = self.statements.len();
        let needle = text.to_lowercase();
        match (1..=n)
            .map(|k| (self.current + k) % n)
            .find(|&i| self.statements[i].label().to_lowercase().contains(&needle))
        {
            Some(i) => {
                self.go(i);
                self.message = format!("found {text:?} at #{}", self.statements[i].command_index);
            }
            None => self.message = format!("{text:?} not found"),
        }
    }

    /// During playback: is it time for the next statement?
    fn due(&self) -> bool {
        let Some(next) = self.statements.get(self.current + 1) else {
            return false;
        };
        let gap_us = (next.started_at_us - self.statements[self.current].started_at_us).max(0);
        match SPEEDS[self.speed] {
            None => true,
            Some(s) => self.reached.elapsed().as_secs_f64() * 1e6 >= gap_us as f64 / s,
        }
    }

    /// Handles one key; false to quit.
    pub fn key(&mut self, code: KeyCode, modifiers: KeyModifiers) -> bool {
        if let Some(text) = &mut self.search {
            match code {
                KeyCode::Enter => {
                    let t = std::mem::take(text);
                    self.search = None;
                    if !t.is_empty() {
                        self.last_search = t.clone();
                        self.find(&t);
                    }
                }
                KeyCode::Esc => self.search = None,
                KeyCode::Backspace => {
                    text.pop();
                }
                KeyCode::Char(c) => text.push(c),
                _ => {}
            }
            return true;
        }
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('c') if modifiers.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Char(' ') => {
                self.playing = !self.playing;
                self.reached = Instant::now();
            }
            KeyCode::Right | KeyCode::Char('n') => self.next(),
            KeyCode::Left | KeyCode::Char('p') => self.prev(),
            KeyCode::Char('e') => self.next_error(),
            KeyCode::Char('+') | KeyCode::Char('=') => {
                self.speed = (self.speed + 1).min(SPEEDS.len() - 1)
            }
            KeyCode::Char('-') => self.speed = self.speed.saturating_sub(1),
            KeyCode::Char('/') => self.search = Some(String::new()),
            KeyCode::Char('N') if !self.last_search.is_empty() => {
                let t = self.last_search.clone();
                self.find(&t)
            }
            KeyCode::Down | KeyCode::Char('j') => self.scroll = self.scroll.saturating_add(1),
            KeyCode::Up | KeyCode::Char('k') => self.scroll = self.scroll.saturating_sub(1),
            KeyCode::PageDown => self.scroll = self.scroll.saturating_add(20),
            KeyCode::PageUp => self.scroll = self.scroll.saturating_sub(20),
            KeyCode::Home | KeyCode::Char('g') => self.go(0),
            KeyCode::End | KeyCode::Char('G') => self.go(self.statements.len().saturating_sub(1)),
            _ => {}
        }
        true
    }
}

/// Runs the player on the terminal until the user quits.
pub async fn run<S: SessionSource>(source: &S, session_id: &str) -> Result<(), PlayerError> {
    let statements = source.statements(session_id).await?;
    let mut state = PlayerState::new(session_id, statements);
    let mut terminal = ratatui::init();
    let result = event_loop(source, &mut state, &mut terminal).await;
    ratatui::restore();
    result
}

/// Restores the terminal if something panics mid-play.
pub fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = io::stdout().execute(LeaveAlternateScreen);
}

async fn event_loop<S: SessionSource>(
    source: &S,
    state: &mut PlayerState,
    terminal: &mut DefaultTerminal,
) -> Result<(), PlayerError> {
    loop {
        let cur = state.current;
        if !state.decoded.contains_key(&cur) {
            let st = &state.statements[cur];
            let frames = source.frames(&st.session_id, st.command_index).await?;
            state.decoded.insert(cur, decode(&frames));
        }
        terminal.draw(|f| draw(f, state))?;
        if event::poll(Duration::from_millis(if state.playing { 20 } else { 250 }))? {
            if let Event::Key(k) = event::read()? {
                if k.kind == KeyEventKind::Press && !state.key(k.code, k.modifiers) {
                    return Ok(());
                }
            }
        }
        if state.playing && state.due() {
            state.next();
            if state.current + 1 >= state.statements.len() {
                state.playing = false;
                state.message = "end of session".into();
            }
        }
    }
}

fn draw(f: &mut Frame, s: &PlayerState) {
    let rows = Layout::default()
        .direction(LayoutDirection::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(1),
        ])
        .split(f.area());
    let st = &s.statements[s.current];
    let errors = s.statements.iter().filter(|x| x.is_error()).count();
    let header = format!(
        " {} · #{} of {} · {} · speed {} · {} errors",
        s.session_id,
        st.command_index,
        s.statements.len(),
        if s.playing { "PLAYING" } else { "paused" },
        s.speed_label(),
        errors
    );
    f.render_widget(
        Paragraph::new(header).style(Style::default().add_modifier(Modifier::REVERSED)),
        rows[0],
    );
    let cols = Layout::default()
        .direction(LayoutDirection::Horizontal)
        .constraints([Constraint::Percentage(40), Constraint::Percentage(60)])
        .split(rows[1]);
    let first = s.statements[0].started_at_us;
    let items: Vec<ListItem> = s
        .statements
        .iter()
        .map(|x| {
            let style = if x.is_error() {
                Style::default().fg(Color::Red)
            } else if x.warnings > 0 {
                Style::default().fg(Color::Yellow)
            } else {
                Style::default()
            };
            ListItem::new(format!(
                "#{:<4} +{:>8.3}s {}",
                x.command_index,
                (x.started_at_us - first) as f64 / 1e6,
                truncate(&x.label(), 200)
            ))
            .style(style)
        })
        .collect();
    let mut list_state = ListState::default().with_selected(Some(s.current));
    f.render_stateful_widget(
        List::new(items)
            .block(Block::default().borders(Borders::ALL).title(" timeline "))
            .highlight_style(Style::default().add_modifier(Modifier::REVERSED))
            .highlight_symbol("> "),
        cols[0],
        &mut list_state,
    );
    let mut lines: Vec<Line> = vec![Line::from(Span::styled(
        st.label(),
        Style::default().add_modifier(Modifier::BOLD),
    ))];
    if !st.params.is_empty() {
        lines.push(Line::from(format!("params: {}", st.params.join(", "))));
    }
    lines.push(Line::from(format!(
        "{} · {:.1} ms · class {} · {}",
        st.command,
        st.duration_us as f64 / 1000.0,
        st.statement_class.as_deref().unwrap_or("-"),
        st.database.as_deref().unwrap_or("-")
    )));
    let oc_style = if st.is_error() {
        Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
    } else if st.warnings > 0 {
        Style::default().fg(Color::Yellow)
    } else {
        Style::default().fg(Color::Green)
    };
    lines.push(Line::from(Span::styled(outcome(st), oc_style)));
    lines.push(Line::from(""));
    if let Some(d) = s.decoded.get(&s.current) {
        for t in &d.results {
            for l in table_lines(t, 1000, &st.masked_columns) {
                lines.push(Line::from(l));
            }
            lines.push(Line::from(""));
        }
        if d.capped {
            lines.push(Line::from(Span::styled(
                "frames capped: the result shown is incomplete",
                Style::default().fg(Color::Yellow),
            )));
        }
        if let Some(p) = &d.problem {
            lines.push(Line::from(format!("(frames not decodable: {p})")));
        }
    }
    f.render_widget(
        Paragraph::new(lines)
            .block(Block::default().borders(Borders::ALL).title(" statement "))
            .wrap(Wrap { trim: false })
            .scroll((s.scroll, 0)),
        cols[1],
    );
    let footer = match &s.search {
        Some(t) => format!("/{t}"),
        None => format!(
            " space play/pause  ←/→ n/p step  e next error  +/- speed  / search  q quit   {}",
            s.message
        ),
    };
    f.render_widget(Paragraph::new(footer), rows[2]);
}

#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("terminal: {0}")]
    Io(#[from] io::Error),
}
