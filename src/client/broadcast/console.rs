//! The person or script at the other end of stdin: reading its lines, the
//! prompt, and what refused lines do to the exit status.
//!
//! Interactive means stdin is a terminal. Then a line saying that `help`
//! lists the commands comes first, and while a line is awaited stderr (when
//! a terminal too, and without `--json`) shows a prompt, erased before
//! anything else is printed. A refused line typed by hand is said and
//! forgotten: the person saw it, and the exit status stays 0. From a script
//! (stdin a pipe or a file) nothing changes: no hint, no prompt, and any
//! refused line makes the exit status 1, said at exit with how many.

use std::cell::Cell;
use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use tokio::sync::mpsc;

/// What is shown as the prompt.
const PROMPT: &str = "> ";
/// Moves to the start of the line and clears it: erases the prompt.
const ERASE: &str = "\r\x1b[K";

#[derive(Debug, Default)]
pub(super) struct Console {
    /// stdin is a terminal: someone types.
    interactive: bool,
    /// Show a prompt (interactive, stderr a terminal, no `--json`).
    prompts: bool,
    /// The prompt is on screen.
    shown: Cell<bool>,
    /// The hint was given.
    greeted: bool,
    /// Lines refused so far.
    refused: usize,
}

impl Console {
    /// Looks at stdin and stderr; `json` output has no prompt between its
    /// lines.
    pub(super) fn new(json: bool) -> Self {
        let interactive = std::io::stdin().is_terminal();
        Self {
            interactive,
            prompts: interactive && !json && std::io::stderr().is_terminal(),
            ..Self::default()
        }
    }

    /// Once, when the station is first on air: the hint, for a person.
    pub(super) fn greet(&mut self) {
        if self.interactive && !self.greeted {
            self.greeted = true;
            self.say("type help for commands");
        }
    }

    /// Shows the prompt, unless it is shown.
    pub(super) fn prompt(&self) {
        if self.prompts && !self.shown.replace(true) {
            let mut err = std::io::stderr().lock();
            // A prompt that cannot be written is no failure.
            let _ = err.write_all(PROMPT.as_bytes()).and_then(|()| err.flush());
        }
    }

    /// A line came in: its Enter took the cursor past the prompt.
    pub(super) fn typed(&self) {
        self.shown.set(false);
    }

    /// Erases the prompt, if shown, so that what follows starts a line.
    pub(super) fn erase(&self) {
        if self.shown.replace(false) {
            eprint!("{ERASE}");
        }
    }

    /// A message on stderr, `radio: ` first.
    pub(super) fn say(&self, msg: &str) {
        self.erase();
        eprintln!("radio: {msg}");
    }

    /// A refused line: said, and counted.
    pub(super) fn refuse(&mut self, why: &str) {
        self.say(why);
        self.refused += 1;
    }

    /// 0, or 1 when a script had a line refused, which it then says (the
    /// refusals may have scrolled away, or gone to a log).
    pub(super) fn exit_code(&self) -> ExitCode {
        self.erase();
        if self.interactive || self.refused == 0 {
            return ExitCode::SUCCESS;
        }
        let n = self.refused;
        let lines = if n == 1 {
            "1 line was refused".to_owned()
        } else {
            format!("{n} lines were refused")
        };
        eprintln!("radio: exit status 1: {lines} (see above)");
        ExitCode::FAILURE
    }
}

/// Reads stdin on a thread of its own (a blocking read must not hold the
/// runtime open at exit); the channel closes at end of input.
pub(super) fn spawn_stdin_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut stdin = std::io::stdin().lock();
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdin.read_until(b'\n', &mut line) {
                Ok(0) => return,
                // A line that is not UTF-8 is still a line (its command is
                // then refused, or its query matches nothing), not the end.
                Ok(_) => {
                    let text = String::from_utf8_lossy(&line).into_owned();
                    if tx.blocking_send(text).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    eprintln!("radio: cannot read stdin: {e}");
                    return;
                }
            }
        }
    });
    rx
}
