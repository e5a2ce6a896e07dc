//! Progress on stderr: a one-line bar redrawn in place on a terminal, plain
//! lines (`[2/5] scanning github ...`) otherwise.

use super::report::safe;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

pub(super) struct Progress {
    mode: Mode,
    total: usize,
    started: Instant,
    state: Mutex<State>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Off,
    Lines,
    Bar,
}

#[derive(Default)]
struct State {
    begun: usize,
    done: usize,
    running: Vec<String>,
    frame: usize,
    drawn: bool,
}

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const BAR: usize = 20;

impl Progress {
    pub(super) fn new(total: usize, quiet: bool) -> Self {
        let mode = if quiet || total == 0 {
            Mode::Off
        } else if std::io::IsTerminal::is_terminal(&std::io::stderr())
            && std::env::var("TERM").map_or(true, |t| t != "dumb")
        {
            Mode::Bar
        } else {
            Mode::Lines
        };
        Progress {
            mode,
            total,
            started: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    pub(super) fn is_bar(&self) -> bool {
        self.mode == Mode::Bar
    }

    /// A server starts; returns its position (1-based) in the run.
    pub(super) fn begin(&self, name: &str) -> usize {
        let mut st = self.state.lock().unwrap();
        st.begun += 1;
        let k = st.begun;
        match self.mode {
            Mode::Off => {}
            Mode::Lines => eprintln!("[{k}/{}] scanning {} ...", self.total, safe(name, 80)),
            Mode::Bar => {
                st.running.push(name.to_string());
                self.draw(&mut st);
            }
        }
        k
    }

    /// A server is done.
    pub(super) fn end(&self, k: usize, name: &str, outcome: &str) {
        let mut st = self.state.lock().unwrap();
        st.done += 1;
        match self.mode {
            Mode::Off => {}
            Mode::Lines => eprintln!("[{k}/{}] {}: {outcome}", self.total, safe(name, 80)),
            Mode::Bar => {
                if let Some(i) = st.running.iter().position(|n| n == name) {
                    st.running.remove(i);
                }
                self.draw(&mut st);
            }
        }
    }

    /// Redraws the bar (spinner and elapsed time).
    pub(super) fn tick(&self) {
        if self.mode == Mode::Bar {
            let mut st = self.state.lock().unwrap();
            st.frame += 1;
            self.draw(&mut st);
        }
    }

    /// Erases the bar.
    pub(super) fn clear(&self) {
        if self.mode == Mode::Bar {
            let mut st = self.state.lock().unwrap();
            if st.drawn {
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
                st.drawn = false;
            }
        }
    }

    fn draw(&self, st: &mut State) {
        let filled = (st.done * BAR).checked_div(self.total).unwrap_or(BAR);
        let bar: String = "█".repeat(filled) + &"░".repeat(BAR - filled);
        let names: Vec<String> = st.running.iter().map(|n| safe(n, 40)).collect();
        let mut line = format!(
            "{} [{bar}] {}/{} {}s",
            SPINNER[st.frame % SPINNER.len()],
            st.done,
            self.total,
            self.started.elapsed().as_secs()
        );
        if !names.is_empty() {
            line.push_str("  scanning ");
            line.push_str(&names.join(", "));
        }
        let width = std::env::var("COLUMNS")
            .ok()
            .and_then(|c| c.parse::<usize>().ok())
            .unwrap_or(80)
            .max(20);
        let line: String = line.chars().take(width - 1).collect();
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        st.drawn = true;
    }
}
