//! Policy diagnostics: every error carries a position, a message and, where we can, a hint.

use std::fmt;
use std::ops::Range;

/// One problem found in a policy file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    pub message: String,
    /// 1-based line; 0 when the problem has no place in the text (e.g. an empty file).
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// A warning: the policy is valid, but probably not what its author wants.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub warning: bool,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.warning { "warning" } else { "error" };
        write!(
            f,
            "{}:{}: {level}: {}",
            self.line, self.column, self.message
        )?;
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// All diagnostics of one policy file, with its name for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors {
    pub origin: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{d}", self.origin)?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// Collects diagnostics against one source text.
pub(crate) struct Sink<'s> {
    text: &'s str,
    pub(crate) diagnostics: Vec<Diagnostic>,
    pub(crate) warnings: Vec<Diagnostic>,
}

impl<'s> Sink<'s> {
    pub(crate) fn new(text: &'s str) -> Self {
        Sink {
            text,
            diagnostics: Vec::new(),
            warnings: Vec::new(),
        }
    }

    pub(crate) fn position(&self, span: Option<&Range<usize>>) -> (usize, usize) {
        let Some(span) = span else { return (0, 0) };
        let offset = span.start.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }

    pub(crate) fn error(&mut self, span: Option<&Range<usize>>, message: impl Into<String>) {
        self.push(span, message.into(), None);
    }

    pub(crate) fn error_help(
        &mut self,
        span: Option<&Range<usize>>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        self.push(span, message.into(), Some(help.into()));
    }

    pub(crate) fn warn(
        &mut self,
        span: Option<&Range<usize>>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) {
        let (line, column) = self.position(span);
        self.warnings.push(Diagnostic {
            message: message.into(),
            line,
            column,
            help: Some(help.into()),
            warning: true,
        });
    }

    fn push(&mut self, span: Option<&Range<usize>>, message: String, help: Option<String>) {
        let (line, column) = self.position(span);
        self.diagnostics.push(Diagnostic {
            message,
            line,
            column,
            help,
            warning: false,
        });
    }
}

/// The closest known name to `wrong`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(wrong: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::jaro_winkler(wrong, k), k))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// A help line suggesting the closest known name, or listing what is accepted.
pub(crate) fn suggest(wrong: &str, known: &[&str]) -> String {
    match did_you_mean(wrong, known.iter().copied()) {
        Some(k) => format!("did you mean `{k}`?"),
        None if known.is_empty() => "nothing of that kind is defined".to_string(),
        None => {
            let mut names: Vec<&str> = known.to_vec();
            names.sort_unstable();
            names.dedup();
            format!(
                "expected one of {}",
                names
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }
}
