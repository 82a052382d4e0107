//! completions/ and man/man1/ are generated from the clap definitions and
//! checked in (man/ is a MANPATH entry: `man` looks for section 1 in
//! man1/). This test fails when they are stale; regenerate them with
//! `RADIO_REGENERATE=1 cargo test --test it generated`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clap_complete::Shell;

use crate::support::radio_bin;

fn expected() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for shell in [
        Shell::Bash,
        Shell::Zsh,
        Shell::Fish,
        Shell::PowerShell,
        Shell::Elvish,
    ] {
        let mut out = Vec::new();
        let mut cmd = radio::command();
        clap_complete::generate(shell, &mut cmd, "radio", &mut out);
        let name = match shell {
            Shell::Bash => "radio.bash",
            Shell::Zsh => "_radio",
            Shell::Fish => "radio.fish",
            Shell::PowerShell => "_radio.ps1",
            _ => "radio.elv",
        };
        files.push((root.join("completions").join(name), out));
    }
    let mut out = Vec::new();
    radio::write_man(None, &mut out).expect("write radio.1");
    files.push((root.join("man/man1/radio.1"), out));
    for sub in radio::man_subcommands() {
        let mut out = Vec::new();
        radio::write_man(Some(&sub), &mut out).expect("write a subcommand's page");
        files.push((root.join(format!("man/man1/radio-{sub}.1")), out));
    }
    files
}

#[test]
fn completions_and_man_pages_are_fresh() {
    let regenerate = std::env::var_os("RADIO_REGENERATE").is_some();
    let mut stale = Vec::new();
    for (path, content) in expected() {
        if regenerate {
            std::fs::create_dir_all(path.parent().expect("a parent directory"))
                .expect("create completions/ or man/");
            std::fs::write(&path, &content).expect("write a generated file");
            continue;
        }
        if std::fs::read(&path).ok().as_deref() != Some(content.as_slice()) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "stale generated files (run `RADIO_REGENERATE=1 cargo test --test it generated`): {stale:?}"
    );
}

/// Each page has the synopsis as typed, the sections a reader looks for,
/// and no page it names is missing.
#[test]
fn man_pages_read_as_man_pages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("man/man1");
    for sub in radio::man_subcommands() {
        let page = std::fs::read_to_string(root.join(format!("radio-{sub}.1"))).expect("a page");
        assert!(
            page.contains(&format!(".SH SYNOPSIS\n\\fBradio {sub}\\fR")),
            "radio-{sub}.1's synopsis"
        );
        for section in [
            "DESCRIPTION",
            "OPTIONS",
            "ENVIRONMENT",
            "\"EXIT STATUS\"",
            "EXAMPLES",
            "\"SEE ALSO\"",
        ] {
            assert!(
                page.contains(&format!(".SH {section}\n")),
                "radio-{sub}.1: {section}"
            );
        }
    }
    let broadcast = std::fs::read_to_string(root.join("radio-broadcast.1")).expect("a page");
    assert!(broadcast.contains(".SH COMMANDS\n"), "the command language");
    for page in std::fs::read_dir(&root).expect("man/man1/") {
        let text = std::fs::read_to_string(page.expect("a page").path()).expect("read");
        for named in text.split("\\fB").filter_map(|s| s.split_once("\\fR(1)")) {
            let file = root.join(format!("{}.1", named.0.replace("\\-", "-")));
            assert!(file.exists(), "{} names a missing page", file.display());
        }
        assert!(!text.contains("radio\\-help"), "no radio-help(1)");
    }
}

/// The README's `export MANPATH="$PWD/man:$(manpath)"` finds the pages:
/// with `man/` as a MANPATH entry, `man -w` (where man would read a page)
/// names the file in `man/man1/`.
#[test]
fn manpath_finds_the_pages() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for page in ["radio", "radio-serve", "radio-broadcast"] {
        let out = Command::new("man")
            .args(["-w", page])
            .env("MANPATH", root.join("man"))
            .output()
            .expect("run man (apt-get install man-db)");
        let found = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "man -w {page}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            Path::new(found.trim()),
            root.join("man/man1").join(format!("{page}.1")),
            "{page}"
        );
    }
}

/// `radio man` on a terminal shows the page as man formats it (through
/// `man -l -`), not its roff; to a pipe it still writes the roff. The
/// terminal is a pseudo-terminal from `script`, the pager `cat`.
#[test]
fn radio_man_on_a_terminal_reads_through_man() {
    let out = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("{} man serve", radio_bin()))
        .arg("/dev/null")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .stdin(Stdio::null())
        .output()
        .expect("run script (util-linux)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // man's bold is overstrike (`N\bN`): keep the second of each pair.
    let raw = String::from_utf8_lossy(&out.stdout);
    let mut shown = String::new();
    for c in raw.chars() {
        if c == '\u{8}' {
            shown.pop();
        } else {
            shown.push(c);
        }
    }
    assert!(
        shown.starts_with("radio-serve(1)") && shown.contains("SYNOPSIS"),
        "{shown}"
    );
    assert!(!shown.contains(".SH") && !shown.contains(".TH"), "{shown}");

    let piped = Command::new(radio_bin())
        .args(["man", "serve"])
        .output()
        .expect("run radio man");
    let roff = String::from_utf8_lossy(&piped.stdout);
    assert!(roff.contains(".TH radio-serve 1") && roff.contains(".SH SYNOPSIS\n"));
}
