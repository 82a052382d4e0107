//! The man pages in `man/man1/` (and `radio man`): clap_mangen's title, name,
//! synopsis, description and options from the clap definitions, then the
//! sections a reader of a man page looks for, written here: the broadcast
//! command language, ENVIRONMENT (every `RADIO_*` variable, from the same
//! definitions), EXIT STATUS, EXAMPLES and SEE ALSO. A subcommand's page is
//! `radio-serve(1)` and its synopsis `radio serve`, as it is typed.
//! `radio man` on a terminal shows the page through `man`; to a file or a
//! pipe it writes the roff, which is what `man/man1/` holds.

use std::io::{IsTerminal as _, Write};
use std::process::{Command, Stdio};

use clap_mangen::Man;

use crate::cli::command;

/// The subcommands that get a page of their own.
pub fn subcommands() -> Vec<String> {
    command()
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .map(|c| c.get_name().to_owned())
        .collect()
}

/// `radio man [SUBCOMMAND]`: the page read through `man -l -` when stdout
/// is a terminal and `man` is installed, else its roff on stdout
/// (`radio man > radio.1`, `radio man | less`).
pub(crate) fn show(subcommand: Option<&str>) -> anyhow::Result<()> {
    let mut page = Vec::new();
    write(subcommand, &mut page)?;
    if std::io::stdout().is_terminal() && read_through_man(&page)? {
        return Ok(());
    }
    crate::errors::to_stdout(&page)
}

/// Shows `page` (roff) with `man -l -`, which formats it for the terminal
/// and pages it. False when there is no `man` to run.
fn read_through_man(page: &[u8]) -> anyhow::Result<bool> {
    let spawned = Command::new("man")
        .args(["-l", "-"])
        .stdin(Stdio::piped())
        .spawn();
    let mut man = match spawned {
        Ok(man) => man,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => anyhow::bail!("cannot run man to show the page: {e}"),
    };
    if let Some(mut stdin) = man.stdin.take() {
        // A reader who quits the pager early closes man's input: no failure.
        if let Err(e) = stdin.write_all(page)
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            anyhow::bail!("cannot give the page to man: {e}");
        }
    }
    let status = man
        .wait()
        .map_err(|e| anyhow::anyhow!("cannot wait for man: {e}"))?;
    if !status.success() {
        anyhow::bail!(
            "man -l - could not show the page ({status}); `radio man | less` shows its source"
        );
    }
    Ok(true)
}

/// Writes the page of radio, or of one of its subcommands.
pub fn write(subcommand: Option<&str>, out: &mut dyn Write) -> anyhow::Result<()> {
    // The page names the version alone: a commit in it would make every
    // commit change the generated pages.
    let mut root = command()
        .version(crate::version::VERSION)
        .disable_help_subcommand(true);
    // Built, so that subcommands carry the version and the global flags.
    root.build();
    let page = match subcommand {
        None => root.clone(),
        Some(name) => {
            let Some(sub) = root.find_subcommand(name).filter(|c| !c.is_hide_set()) else {
                return Err(crate::errors::Usage(format!(
                    "no subcommand {name:?}; try one of: {}",
                    subcommands().join(", ")
                ))
                .into());
            };
            sub.clone()
                .display_name(format!("radio-{name}"))
                .bin_name(format!("radio {name}"))
                // The command language has its own section below.
                .after_help("")
        }
    };
    let name = subcommand.unwrap_or("");
    let man = Man::new(page.clone());
    man.render_title(out)?;
    man.render_name_section(out)?;
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)?;
    if subcommand.is_none() {
        man.render_subcommands_section(out)?;
    }
    if name == "broadcast" {
        section(out, "COMMANDS", crate::client::broadcast::commands::HELP)?;
    }
    environment(out, &page, subcommand.is_none())?;
    section(out, "EXIT STATUS", exit_status(name))?;
    section(out, "EXAMPLES", examples(name))?;
    let others: Vec<String> = std::iter::once("radio".to_owned())
        .chain(subcommands().into_iter().map(|s| format!("radio-{s}")))
        .filter(|p| Some(p.as_str()) != subcommand.map(|s| format!("radio-{s}")).as_deref())
        .filter(|p| !(subcommand.is_none() && p == "radio"))
        .map(|p| format!("\\fB{p}\\fR(1)"))
        .collect();
    writeln!(out, ".SH \"SEE ALSO\"")?;
    writeln!(out, "{}", others.join(", "))?;
    writeln!(
        out,
        ".PP\nREADME.md and docs/ in the source: the protocol, the player, the cluster, metrics."
    )?;
    man.render_version_section(out)?;
    Ok(())
}

/// Text escaped for roff: backslashes, and lines that would read as requests.
fn roff(text: &str) -> String {
    text.lines()
        .map(|l| {
            let l = l.replace('\\', "\\e").replace('-', "\\-");
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A section of preformatted text.
fn section(out: &mut dyn Write, title: &str, text: &str) -> std::io::Result<()> {
    let title = match title.contains(' ') {
        true => format!("\"{title}\""),
        false => title.to_owned(),
    };
    writeln!(out, ".SH {title}\n.nf\n{}\n.fi", roff(text))
}

/// Every variable the page's flags read, and those read besides them.
fn environment(out: &mut dyn Write, page: &clap::Command, root: bool) -> std::io::Result<()> {
    writeln!(out, ".SH ENVIRONMENT")?;
    for arg in page.get_arguments() {
        let (Some(env), Some(long)) = (arg.get_env().and_then(|e| e.to_str()), arg.get_long())
        else {
            continue;
        };
        writeln!(
            out,
            ".TP\n\\fB{}\\fR\nas \\fB\\-\\-{}\\fR",
            roff(env),
            roff(long)
        )?;
    }
    let mut also = vec![(
        "NO_COLOR",
        "when set (to anything but empty), no colour on a terminal unless \\-\\-color always",
    )];
    if root || page.get_name() == "serve" {
        also.push((
            "RUST_LOG",
            "which log lines to write, like info or radio=debug (default: info for serve, warn for the clients)",
        ));
    }
    for (name, what) in also {
        writeln!(out, ".TP\n\\fB{name}\\fR\n{what}")?;
    }
    Ok(())
}

fn exit_status(name: &str) -> &'static str {
    match name {
        "serve" => {
            "0  stopped by SIGINT or SIGTERM, after draining its connections
1  could not start (the address is taken or cannot be resolved, the
   media folder cannot be read, ...) or failed while serving
2  a usage error: a flag or argument that cannot work (a --station
   whose SOURCE has nothing to play included)"
        }
        "broadcast" => {
            "0  stopped (the stop command, the end of stdin, Ctrl-C); lines
   refused at a terminal (stdin a terminal) do not count
1  the server refused the station or the key, a line from a script
   (stdin a pipe or a file) was refused (the last line says how many),
   or the first connection failed (is radio serve running there?)
2  a usage error: a flag or argument that cannot work, a bad station
   name or URL"
        }
        "listen" => {
            "0  quit with Ctrl-C (or stdout closed)
1  the first connection failed (is radio serve running there?) or the
   player could not be run
2  a usage error: a flag or argument that cannot work, a bad station
   name or URL"
        }
        "loadtest" => {
            "0  the run finished and met --max-p99 and --min-delivery
1  a gate was missed, or the run could not be made (no server, too few
   open files)
2  a usage error: a flag or argument that cannot work"
        }
        _ => {
            "0  success
1  a failure at run time
2  a usage error: a flag or argument that cannot work (a bad station
   name or URL included)"
        }
    }
}

fn examples(name: &str) -> &'static str {
    match name {
        "serve" => {
            "Serve a music folder on every address, with JSON logs:
    radio serve -l 0.0.0.0:8080 -m ~/Music --log-format json

Run stations around the clock, from a folder shuffled and a playlist:
    radio serve -m ~/Music --station jazz=Jazz,shuffle \\
        --station morning=/srv/radio/morning.m3u

Two nodes of a cluster sharing one port:
    radio serve --redis redis://127.0.0.1:6379 --node-id a --reuse-port &
    radio serve --redis redis://127.0.0.1:6379 --node-id b --reuse-port &

The same from the environment (systemd, containers):
    RADIO_LISTEN=localhost:8080 RADIO_MEDIA=/srv/music radio serve"
        }
        "broadcast" => {
            "Run a station by hand:
    radio broadcast -u http://127.0.0.1:8080 -s lofi
    play \"Side A\" 30
    pause

Run a script, or a playlist on a loop:
    radio broadcast -s lofi < tonight.txt
    radio broadcast -s lofi --playlist tonight.m3u"
        }
        "listen" => {
            "Follow a station in the terminal, or play it through mpv:
    radio listen -u https://radio.example.org -s lofi
    radio listen -s lofi --player mpv

Every frame as JSON, for a script:
    radio listen -s lofi --json | jq -c 'select(.type == \"sync\")'"
        }
        "loadtest" => {
            "18,000 listeners against a server started here, gated for CI:
    radio serve --max-connections 20000 &
    radio loadtest -u 127.0.0.1:8080 --listeners 18000 --server-pid $! \\
        --max-p99 120ms --min-delivery 100 --json report.json"
        }
        "completions" => {
            "    radio completions bash > /usr/share/bash-completion/completions/radio
    radio completions zsh > /usr/share/zsh/vendor-completions/_radio"
        }
        "man" => {
            "Read a page on a terminal (through man), or save its source:
    radio man serve
    radio man serve > radio-serve.1"
        }
        _ => {
            "    radio serve &
    radio broadcast -s lofi
    radio listen -s lofi"
        }
    }
}
