//! `sip-xdp top`: the live terminal view (ratatui over crossterm). What it shows is read by
//! [`crate::top`]; its actions are the CLI's own calls ([`Control`]), each confirmed first.
use std::{
    io::IsTerminal as _,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::IpNet;
use ratatui::{
    DefaultTerminal, Frame,
    crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Paragraph, Row, Table, TableState},
};

use super::{Cli, TopArgs, load_settings, parse_net};
use crate::{
    control::{Control, Lift, ListKind},
    loader::PinDir,
    state::BanOrigin,
    time::human_duration,
    top::{self, FeedHealth, RankedSource, Reader, Sample, SortBy},
};

/// Smaller than this, the view says so on one line instead.
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 20;
/// A ban from `top` lasts this long unless the operator types another length.
const BAN_FOR: Duration = Duration::from_secs(3600);
const ACTION_COMMENT: &str = "from sip-xdp top";

pub(super) fn top(cli: &Cli, args: &TopArgs) -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "`sip-xdp top` needs a terminal (its standard input and output are not both one); \
             for scripts and logs use `sip-xdp status --output json` or `sip-xdp ban list`"
        );
    }
    let metrics = metrics_address(args.config.as_deref())?;
    let reader = Reader::open(&cli.pin_dir, &cli.state_dir, metrics, args.max_sources)?;
    let control = Control::new(PinDir::new(&cli.pin_dir), cli.state_dir.clone());
    let mut view = View {
        filter: args.filter,
        ifaces: reader.attached(),
        interval: args.interval.max(Duration::from_millis(100)),
        ..View::default()
    };
    let mut terminal = ratatui::init();
    let result = run(&mut terminal, &reader, &control, &mut view);
    ratatui::restore();
    result
}

/// The daemon's metrics address, from the default config (feed health), if it serves one.
fn metrics_address(config: Option<&Path>) -> Result<Option<std::net::SocketAddr>> {
    let (settings, _) = load_settings(config).context("reading the config")?;
    Ok(settings.metrics.enabled.then_some(settings.metrics.listen))
}

/// What the operator asked for, awaiting a yes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Action {
    Ban(IpAddr, Duration),
    Unban(IpAddr),
    Allow(IpAddr),
}

impl Action {
    fn question(&self) -> String {
        match self {
            Action::Ban(a, d) => format!("Ban {a} for {}? (y/n)", human_duration(*d)),
            Action::Unban(a) => {
                format!("Lift this node's bans of {a} (manual, rate, prefix)? (y/n)")
            }
            Action::Allow(a) => format!("Allowlist {a} (never limited)? (y/n)"),
        }
    }

    fn apply(&self, control: &Control) -> Result<String> {
        let report = match self {
            Action::Ban(a, d) => control.ban_add(
                &[IpNet::from(*a)],
                BanOrigin::Manual,
                *d,
                Some(ACTION_COMMENT.to_owned()),
            )?,
            Action::Unban(a) => control.ban_del(&[IpNet::from(*a)], &Lift::local())?,
            Action::Allow(a) => control.list_add(
                ListKind::Allow,
                &[IpNet::from(*a)],
                Some(ACTION_COMMENT.to_owned()),
            )?,
        };
        Ok(if report.lines.is_empty() {
            format!("{self:?}: nothing to do")
        } else {
            report.lines.join("; ")
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
enum Mode {
    #[default]
    Normal,
    /// Typing a filter (address or CIDR).
    Filter(String),
    /// Typing how long to ban the selected source (empty: [`BAN_FOR`]).
    BanFor(IpAddr, String),
    Confirm(Action),
}

#[derive(Default)]
struct View {
    previous: Option<Sample>,
    current: Option<Sample>,
    sort: SortBy,
    filter: Option<IpNet>,
    /// The selected source, followed across refreshes by its address.
    selected: Option<IpAddr>,
    mode: Mode,
    message: String,
    ifaces: Vec<String>,
    interval: Duration,
}

fn run(
    terminal: &mut DefaultTerminal,
    reader: &Reader,
    control: &Control,
    view: &mut View,
) -> Result<()> {
    let mut next_sample = Instant::now();
    loop {
        if Instant::now() >= next_sample {
            match reader.sample() {
                Ok(sample) => view.previous = view.current.replace(sample),
                // Shown, and read again at the next refresh: the maps may be back by then (a
                // detach and attach), and the operator may still want to act.
                Err(e) => view.message = format!("reading the maps failed: {e:#}"),
            }
            next_sample = Instant::now() + view.interval;
        }
        terminal.draw(|frame| draw(frame, view))?;
        let wait = next_sample.saturating_duration_since(Instant::now());
        if !event::poll(wait)? {
            continue;
        }
        let Event::Key(key) = event::read()? else {
            continue;
        };
        if key.kind != KeyEventKind::Press {
            continue;
        }
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Ok(());
        }
        match std::mem::take(&mut view.mode) {
            Mode::Normal => {
                if handle_normal(key.code, view) {
                    return Ok(());
                }
            }
            Mode::Filter(mut text) => match key.code {
                KeyCode::Enter => {
                    if text.trim().is_empty() {
                        view.filter = None;
                        view.message = "filter cleared".to_owned();
                    } else {
                        match parse_net(&text) {
                            Ok(net) => {
                                view.filter = Some(net);
                                view.message = format!("showing sources inside {net}");
                            }
                            Err(e) => view.message = e,
                        }
                    }
                }
                KeyCode::Esc => view.message = "filter unchanged".to_owned(),
                KeyCode::Backspace => {
                    text.pop();
                    view.mode = Mode::Filter(text);
                }
                KeyCode::Char(c) => {
                    text.push(c);
                    view.mode = Mode::Filter(text);
                }
                _ => view.mode = Mode::Filter(text),
            },
            Mode::BanFor(addr, mut text) => match key.code {
                KeyCode::Enter if text.trim().is_empty() => {
                    view.mode = Mode::Confirm(Action::Ban(addr, BAN_FOR));
                }
                KeyCode::Enter => match super::parse_duration_arg(text.trim()) {
                    Ok(d) if !d.is_zero() => view.mode = Mode::Confirm(Action::Ban(addr, d)),
                    Ok(_) => view.message = "a ban must last longer than 0s".to_owned(),
                    Err(e) => view.message = e,
                },
                KeyCode::Esc => view.message = "cancelled".to_owned(),
                KeyCode::Backspace => {
                    text.pop();
                    view.mode = Mode::BanFor(addr, text);
                }
                KeyCode::Char(c) => {
                    text.push(c);
                    view.mode = Mode::BanFor(addr, text);
                }
                _ => view.mode = Mode::BanFor(addr, text),
            },
            Mode::Confirm(action) => {
                if matches!(key.code, KeyCode::Char('y') | KeyCode::Char('Y')) {
                    view.message = match action.apply(control) {
                        Ok(done) => done,
                        Err(e) => format!("failed: {e:#}"),
                    };
                    // Show the change at once.
                    next_sample = Instant::now();
                } else {
                    view.message = "cancelled".to_owned();
                }
            }
        }
    }
}

/// The ranked sources the view shows now.
fn ranked(view: &View) -> Vec<RankedSource> {
    match &view.current {
        Some(now) => top::rank(view.previous.as_ref(), now, view.filter, view.sort),
        None => Vec::new(),
    }
}

/// A key in normal mode; true to quit.
fn handle_normal(code: KeyCode, view: &mut View) -> bool {
    let rows = ranked(view);
    let index = view
        .selected
        .and_then(|a| rows.iter().position(|r| r.row.addr == a));
    let select = |i: usize| rows.get(i).map(|r| r.row.addr);
    match code {
        KeyCode::Char('q') | KeyCode::Esc => return true,
        KeyCode::Char('s') => {
            view.sort = view.sort.next();
            view.message = format!("sorted by {}", view.sort.name());
        }
        KeyCode::Char('/') => view.mode = Mode::Filter(String::new()),
        KeyCode::Down | KeyCode::Char('j') => {
            view.selected = select(index.map_or(0, |i| (i + 1).min(rows.len().saturating_sub(1))));
        }
        KeyCode::Up | KeyCode::Char('k') => {
            view.selected = select(index.map_or(0, |i| i.saturating_sub(1)));
        }
        KeyCode::Char(c @ ('b' | 'u' | 'a')) => match index.and_then(select) {
            Some(addr) => {
                view.mode = match c {
                    'b' => Mode::BanFor(addr, String::new()),
                    'u' => Mode::Confirm(Action::Unban(addr)),
                    _ => Mode::Confirm(Action::Allow(addr)),
                };
            }
            None => view.message = "select a source first (j/k or the arrows)".to_owned(),
        },
        _ => {}
    }
    false
}

fn rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

fn rates_line(label: &str, rates: &std::collections::BTreeMap<&'static str, f64>) -> Line<'static> {
    let mut parts: Vec<(&str, f64)> = rates.iter().map(|(k, v)| (*k, *v)).collect();
    parts.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    let text: Vec<String> = parts
        .iter()
        .map(|(name, r)| format!("{name} {}", rate(*r)))
        .collect();
    Line::from(format!(
        "{label:<11}{}",
        if text.is_empty() {
            "-".to_owned()
        } else {
            text.join("  ")
        }
    ))
}

fn feed_text(feed: &FeedHealth) -> String {
    match feed {
        FeedHealth::NoDaemon => "feeds: no daemon metrics (CrowdSec health unknown)".to_owned(),
        FeedHealth::NotConfigured => "feeds: CrowdSec not configured".to_owned(),
        FeedHealth::Crowdsec {
            up,
            last_sync_s_ago,
            decisions,
        } => format!(
            "feeds: CrowdSec {}, last sync {}, {decisions} decisions",
            if *up { "up" } else { "DOWN" },
            last_sync_s_ago.map_or("never".to_owned(), |s| format!("{s}s ago"))
        ),
    }
}

fn left(secs: u64) -> String {
    human_duration(Duration::from_secs(secs))
        .split(' ')
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

fn draw(frame: &mut Frame, view: &View) {
    let area = frame.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        frame.render_widget(
            Paragraph::new(format!(
                "sip-xdp top: terminal too small ({}x{}), needs {MIN_WIDTH}x{MIN_HEIGHT}; q quits",
                area.width, area.height
            )),
            area,
        );
        return;
    }
    let Some(now) = &view.current else {
        frame.render_widget(Paragraph::new("sip-xdp top: reading the maps..."), area);
        return;
    };
    let [
        header,
        rates_area,
        tables_area,
        sources_area,
        bans_area,
        footer,
    ] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Length(2),
        Constraint::Min(6),
        Constraint::Length(8),
        Constraint::Length(1),
    ])
    .areas(area);

    let filter = view.filter.map_or("all".to_owned(), |f| f.to_string());
    frame.render_widget(
        Paragraph::new(format!(
            "sip-xdp top  on {}  {}  refresh {}  sort {}  sources {}",
            if view.ifaces.is_empty() {
                "(not attached)".to_owned()
            } else {
                view.ifaces.join(",")
            },
            if now.monitor {
                "MONITOR MODE"
            } else {
                "enforcing"
            },
            human_duration(view.interval),
            view.sort.name(),
            filter
        ))
        .style(Style::new().add_modifier(Modifier::REVERSED)),
        header,
    );

    let rates = view
        .previous
        .as_ref()
        .map(|before| top::rates(before, now))
        .unwrap_or_default();
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!("packets/s  {} total", rate(rates.total))),
            rates_line("verdict/s", &rates.by_verdict),
            rates_line("class/s", &rates.by_class),
        ]),
        rates_area,
    );

    let f = &now.fill;
    let by_origin = top::bans_by_origin(&now.bans);
    let origins: Vec<String> = by_origin.iter().map(|(o, n)| format!("{o} {n}")).collect();
    frame.render_widget(
        Paragraph::new(vec![
            Line::from(format!(
                "tables     sources {}{}/{}  bans {}/{}  prefixes {}/{}  verified {}/{}  walk {:.1} ms",
                if now.walk_truncated { ">=" } else { "" },
                f.tracked_sources,
                f.sources_capacity,
                f.ban_records,
                f.bans_capacity,
                f.tracked_prefixes,
                f.prefixes_capacity,
                f.verified_sources,
                f.verified_capacity,
                now.walk_time.as_secs_f64() * 1e3
            )),
            Line::from(format!(
                "bans       {}   {}",
                if origins.is_empty() {
                    "none in force".to_owned()
                } else {
                    origins.join(", ")
                },
                feed_text(&now.feed)
            )),
        ]),
        tables_area,
    );

    let rows = ranked(view);
    let selected = view
        .selected
        .and_then(|a| rows.iter().position(|r| r.row.addr == a));
    let shown: Vec<Row> = rows
        .iter()
        .take(sources_area.height.saturating_sub(3) as usize + 50)
        .map(|r| {
            let s = &r.row;
            let drop_pct = if s.packets == 0 {
                0.0
            } else {
                s.dropped as f64 * 100.0 / s.packets as f64
            };
            Row::new(vec![
                s.addr.to_string(),
                rate(r.packets_per_sec),
                rate(r.drops_per_sec),
                s.packets.to_string(),
                s.dropped.to_string(),
                format!("{drop_pct:.0}%"),
                format!("{}/{}", s.register_tokens.0, s.register_tokens.1),
                s.strikes.to_string(),
                if s.verified { "yes" } else { "-" }.to_owned(),
                s.ban
                    .as_ref()
                    .map_or("-".to_owned(), |(o, secs)| format!("{o} {}", left(*secs))),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(26),
        Constraint::Length(8),
        Constraint::Length(8),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(5),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(8),
        Constraint::Min(10),
    ];
    let table = Table::new(shown, widths)
        .header(
            Row::new(vec![
                "source", "pkts/s", "drops/s", "packets", "dropped", "drop", "register", "strikes",
                "verified", "ban",
            ])
            .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .block(Block::bordered().title(format!(
            " sources: {} shown of {} read ",
            rows.len(),
            now.sources.len()
        )))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected(selected);
    frame.render_stateful_widget(table, sources_area, &mut state);

    let ban_rows: Vec<Row> = now
        .bans
        .iter()
        .filter(|b| {
            view.filter.is_none_or(|f| {
                b.target
                    .parse::<IpNet>()
                    .map(|n| f.contains(&n) || n.contains(&f.addr()))
                    .or_else(|_| b.target.parse::<IpAddr>().map(|a| f.contains(&a)))
                    .unwrap_or(true)
            })
        })
        .map(|b| {
            Row::new(vec![
                b.target.clone(),
                b.origin.clone(),
                b.class.clone().unwrap_or_else(|| "-".to_owned()),
                left(b.remaining_s),
                b.strikes.map_or("-".to_owned(), |s| s.to_string()),
            ])
        })
        .collect();
    let shown_bans = ban_rows.len();
    let bans = Table::new(
        ban_rows,
        [
            Constraint::Length(30),
            Constraint::Length(10),
            Constraint::Length(14),
            Constraint::Length(12),
            Constraint::Min(7),
        ],
    )
    .header(
        Row::new(vec!["banned", "origin", "class", "left", "strikes"])
            .style(Style::new().add_modifier(Modifier::BOLD)),
    )
    .block(Block::bordered().title(format!(
        " bans in force: {} shown of {} ",
        shown_bans,
        now.bans.len()
    )));
    frame.render_widget(bans, bans_area);

    let footer_text = match &view.mode {
        Mode::Normal if view.message.is_empty() => {
            "q quit  s sort  / filter  j/k select  b ban  u unban  a allow".to_owned()
        }
        Mode::Normal => view.message.clone(),
        Mode::Filter(text) => format!("filter (address or CIDR, empty for all): {text}_"),
        Mode::BanFor(addr, text) => format!(
            "ban {addr} for how long (e.g. 30m, 2h, 7d; empty for {}): {text}_",
            human_duration(BAN_FOR)
        ),
        Mode::Confirm(action) => action.question(),
    };
    frame.render_widget(
        Paragraph::new(footer_text).style(Style::new().add_modifier(Modifier::BOLD)),
        footer,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;
    use crate::{
        maps::Counters,
        status::TableFill,
        top::{BanRow, SourceRow},
    };

    fn view_with(rows: Vec<SourceRow>) -> View {
        let sample = Sample {
            taken: Instant::now(),
            counters: Counters::default(),
            monitor: false,
            sources: rows,
            walk_truncated: false,
            walk_time: Duration::from_micros(300),
            bans: vec![BanRow {
                target: "203.0.113.9".to_owned(),
                origin: "rate".to_owned(),
                class: Some("register".to_owned()),
                remaining_s: 59,
                strikes: Some(1),
            }],
            fill: TableFill::default(),
            feed: FeedHealth::NotConfigured,
        };
        View {
            current: Some(sample),
            interval: Duration::from_secs(1),
            ..View::default()
        }
    }

    fn screen(view: &View, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
        terminal.draw(|f| draw(f, view)).unwrap();
        let buffer = terminal.backend().buffer().clone();
        let mut out = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                out.push_str(buffer[(x, y)].symbol());
            }
            out.push('\n');
        }
        out
    }

    #[test]
    fn a_small_terminal_gets_one_line_saying_so() {
        let text = screen(&view_with(Vec::new()), 60, 10);
        assert!(
            text.starts_with("sip-xdp top: terminal too small (60x10), needs 80x20"),
            "{text}"
        );
    }

    #[test]
    fn sources_and_bans_are_drawn_and_keys_select_and_confirm() {
        let mut view = view_with(vec![SourceRow {
            addr: "203.0.113.9".parse().unwrap(),
            packets: 50,
            dropped: 40,
            strikes: 1,
            verified: false,
            ban: Some(("rate".to_owned(), 59)),
            register_tokens: (0, 10),
        }]);
        let text = screen(&view, 120, 30);
        assert!(text.contains("203.0.113.9"), "{text}");
        assert!(text.contains("rate 59s"), "{text}");
        assert!(text.contains("bans in force: 1 shown of 1"), "{text}");
        assert!(!handle_normal(KeyCode::Char('j'), &mut view));
        assert_eq!(view.selected, Some("203.0.113.9".parse().unwrap()));
        assert!(!handle_normal(KeyCode::Char('b'), &mut view));
        assert_eq!(
            view.mode,
            Mode::BanFor("203.0.113.9".parse().unwrap(), String::new())
        );
        assert!(screen(&view, 120, 30).contains("ban 203.0.113.9 for how long"));
        view.mode = Mode::Confirm(Action::Ban("203.0.113.9".parse().unwrap(), BAN_FOR));
        assert!(screen(&view, 120, 30).contains("Ban 203.0.113.9 for 1h? (y/n)"));
        assert!(handle_normal(KeyCode::Char('q'), &mut view));
    }
}
