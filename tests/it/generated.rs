//! completions/ and man/ are generated from the clap definitions and checked
//! in. This test fails when they are stale; regenerate them with
//! `RADIO_REGENERATE=1 cargo test --test it generated`.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

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
    files.push((root.join("man/radio.1"), out));
    for sub in radio::man_subcommands() {
        let mut out = Vec::new();
        radio::write_man(Some(&sub), &mut out).expect("write a subcommand's page");
        files.push((root.join(format!("man/radio-{sub}.1")), out));
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
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
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
    for page in std::fs::read_dir(&root).expect("man/") {
        let text = std::fs::read_to_string(page.expect("a page").path()).expect("read");
        for named in text.split("\\fB").filter_map(|s| s.split_once("\\fR(1)")) {
            let file = root.join(format!("{}.1", named.0.replace("\\-", "-")));
            assert!(file.exists(), "{} names a missing page", file.display());
        }
        assert!(!text.contains("radio\\-help"), "no radio-help(1)");
    }
}
