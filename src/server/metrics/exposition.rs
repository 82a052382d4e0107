//! The two text formats `GET /metrics` speaks, chosen by the request's
//! `Accept` header: OpenMetrics 1.0 for a client that asks for it (every
//! Prometheus since 2.5 does, preferring it), and the classic Prometheus text
//! format 0.0.4 otherwise (curl, `promtool check metrics`, older scrapers).
//!
//! The registry encodes OpenMetrics; [`to_classic`] rewrites that into the
//! classic format, which differs only in its metadata lines: a counter's
//! `# TYPE` names its `_total` sample, an info metric is a gauge named
//! `_info`, and there is no `# UNIT` and no `# EOF`.

/// A text exposition format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    OpenMetrics,
    Classic,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics when it names
    /// `application/openmetrics-text` with a quality at least that of the
    /// best text range (`text/plain`, `text/*`, `*/*`); classic otherwise,
    /// and when there is no header.
    pub(crate) fn negotiate(accept: Option<&str>) -> Self {
        let Some(accept) = accept else {
            return Self::Classic;
        };
        let (mut openmetrics, mut classic) = (0.0f32, 0.0f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => classic = classic.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics >= classic {
            Self::OpenMetrics
        } else {
            Self::Classic
        }
    }

    /// The `Content-Type` of a body in this format.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            Self::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Self::Classic => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The classic text format (0.0.4) of an OpenMetrics exposition.
pub(crate) fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // `# HELP` comes before `# TYPE`, which may rename the family.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (suffix, kind) = match kind {
                "counter" => ("_total", "counter"),
                "info" => ("_info", "gauge"),
                "unknown" => ("", "untyped"),
                other => ("", other),
            };
            if let Some((help_name, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {help_name}{suffix} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name}{suffix} {kind}\n"));
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Prometheus 2.42 sends.
    const PROMETHEUS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

    #[test]
    fn negotiates_on_accept() {
        assert_eq!(Format::negotiate(Some(PROMETHEUS)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Classic);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Classic);
        assert_eq!(
            Format::negotiate(Some("text/plain;version=0.0.4")),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0.2, text/plain;q=0.9")),
            Format::Classic
        );
        assert_eq!(
            Format::negotiate(Some("Application/OpenMetrics-Text")),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text;q=0")),
            Format::Classic
        );
    }

    #[test]
    fn rewrites_counters_and_info() {
        let om = "# HELP radio_a Accepted.\n# TYPE radio_a counter\nradio_a_total 3\n\
                  # HELP radio_build Build.\n# TYPE radio_build info\nradio_build_info{v=\"1\"} 1\n\
                  # HELP radio_g Open.\n# TYPE radio_g gauge\n# UNIT radio_g bytes\nradio_g 2\n# EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP radio_a_total Accepted.\n# TYPE radio_a_total counter\nradio_a_total 3\n\
             # HELP radio_build_info Build.\n# TYPE radio_build_info gauge\nradio_build_info{v=\"1\"} 1\n\
             # HELP radio_g Open.\n# TYPE radio_g gauge\nradio_g 2\n"
        );
    }
}
