//! Log set-up: human-readable lines, or one JSON object per line for log
//! collectors (`OVERLAY_LOG_FORMAT=json`), to standard error; the level by an
//! environment filter (`OVERLAY_LOG`, e.g. `info` or `warn,overlay_kafka=info`;
//! default `warn`). Log lines name households, events and orders by id, as
//! fields (`household`, `event_id`, `order_id`), and carry no other client data.

use tracing_subscriber::EnvFilter;

/// The log formats `OVERLAY_LOG_FORMAT` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `text` (the default) or `json`; anything else is refused with the choices.
    pub fn parse(name: Option<&str>) -> Result<Self, String> {
        match name.map(str::trim) {
            None | Some("") | Some("text") => Ok(Format::Text),
            Some("json") => Ok(Format::Json),
            Some(other) => Err(format!("OVERLAY_LOG_FORMAT={other:?} is not a log format (text or json)")),
        }
    }
}

/// Installs the global subscriber. A bad `OVERLAY_LOG_FORMAT` is reported and text is used.
pub fn init() {
    let filter = EnvFilter::try_from_env("OVERLAY_LOG").unwrap_or_else(|_| "warn".into());
    let format = Format::parse(std::env::var("OVERLAY_LOG_FORMAT").ok().as_deref());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        Ok(Format::Json) => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
        Ok(Format::Text) | Err(_) => {
            // Colour only for a terminal: logs kept in files stay plain text.
            builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init()
        }
    }
    if let Err(e) = format {
        tracing::warn!("{e}; logging as text");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_a_typo_is_refused() {
        assert_eq!(Format::parse(None), Ok(Format::Text));
        assert_eq!(Format::parse(Some("json")), Ok(Format::Json));
        assert_eq!(Format::parse(Some("text")), Ok(Format::Text));
        assert!(Format::parse(Some("jsno")).unwrap_err().contains("text or json"));
    }
}
