//! A spanned, error-collecting reader over a parsed TOML document.
//!
//! serde stops at the first problem; policy authors want every problem at once, each with its
//! line and column. This reader walks the `toml_edit` tree, records a diagnostic for each missing,
//! mistyped or unknown key and carries on.

use std::ops::Range;

use toml_edit::{Item, TableLike, Value};

use super::diag::{suggest, Sink};

/// A value with the place it was written.
#[derive(Debug, Clone)]
pub(crate) struct Sp<T> {
    pub value: T,
    pub span: Option<Range<usize>>,
}

pub(crate) fn item_span(item: &Item) -> Option<Range<usize>> {
    match item {
        Item::Value(v) => v.span(),
        Item::Table(t) => t.span(),
        Item::ArrayOfTables(a) => a.span(),
        Item::None => None,
    }
}

/// One table (standard or inline) being read.
pub(crate) struct Obj<'a> {
    table: &'a dyn TableLike,
    pub span: Option<Range<usize>>,
    pub path: String,
}

fn type_name(item: &Item) -> &'static str {
    match item {
        Item::None => "nothing",
        Item::Table(_) => "a table",
        Item::ArrayOfTables(_) => "an array of tables",
        Item::Value(v) => match v {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a datetime",
            Value::Array(_) => "an array",
            Value::InlineTable(_) => "an inline table",
        },
    }
}

impl<'a> Obj<'a> {
    pub(crate) fn root(table: &'a dyn TableLike) -> Self {
        Obj {
            table,
            span: Some(0..0),
            path: String::new(),
        }
    }

    fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<(Option<Range<usize>>, &'a Item)> {
        let (k, item) = self.table.get_key_value(key)?;
        let span = item_span(item).or_else(|| k.span());
        Some((span, item))
    }

    pub(crate) fn raw(&self, key: &str) -> Option<&'a Item> {
        self.table.get(key)
    }

    pub(crate) fn key_span(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .or_else(|| self.span.clone())
    }

    fn mistyped(
        &self,
        sink: &mut Sink,
        key: &str,
        span: Option<Range<usize>>,
        want: &str,
        item: &Item,
    ) {
        sink.error(
            span.as_ref(),
            format!(
                "`{}` must be {want}, found {}",
                self.child_path(key),
                type_name(item)
            ),
        );
    }

    fn missing(&self, sink: &mut Sink, key: &str, want: &str) {
        let place = if self.path.is_empty() {
            "the policy".to_string()
        } else {
            format!("`{}`", self.path)
        };
        sink.error_help(
            self.span.as_ref(),
            format!("{place} is missing the required key `{key}`"),
            format!("add `{key} = ` {want}"),
        );
    }

    /// A string that must be one of `choices` (each with what it gives): `None` when absent, or
    /// after an error naming the value, with `help` listing the choices.
    pub(crate) fn choice<T: Copy>(
        &self,
        sink: &mut Sink,
        key: &str,
        choices: &[(&str, T)],
        help: &str,
    ) -> Option<T> {
        let v = self.str(sink, key)?;
        let found = choices.iter().find(|(name, _)| *name == v.value);
        if found.is_none() {
            sink.error_help(
                v.span.as_ref(),
                format!("unknown `{key}` value `{}`", v.value),
                help,
            );
        }
        found.map(|(_, t)| *t)
    }

    pub(crate) fn str(&self, sink: &mut Sink, key: &str) -> Option<Sp<String>> {
        let (span, item) = self.get(key)?;
        match item.as_str() {
            Some(s) => Some(Sp {
                value: s.to_string(),
                span,
            }),
            None => {
                self.mistyped(sink, key, span, "a string", item);
                None
            }
        }
    }

    pub(crate) fn req_str(&self, sink: &mut Sink, key: &str) -> Option<Sp<String>> {
        if self.get(key).is_none() {
            self.missing(sink, key, "with a string");
            return None;
        }
        self.str(sink, key)
    }

    pub(crate) fn bool(&self, sink: &mut Sink, key: &str) -> Option<bool> {
        let (span, item) = self.get(key)?;
        let b = item.as_bool();
        if b.is_none() {
            self.mistyped(sink, key, span, "`true` or `false`", item);
        }
        b
    }

    pub(crate) fn int(&self, sink: &mut Sink, key: &str) -> Option<Sp<i64>> {
        let (span, item) = self.get(key)?;
        match item.as_integer() {
            Some(v) => Some(Sp { value: v, span }),
            None => {
                self.mistyped(sink, key, span, "an integer", item);
                None
            }
        }
    }

    /// A non-negative integer that fits `u64`.
    pub(crate) fn uint(&self, sink: &mut Sink, key: &str) -> Option<u64> {
        let v = self.int(sink, key)?;
        match u64::try_from(v.value) {
            Ok(u) => Some(u),
            Err(_) => {
                sink.error(
                    v.span.as_ref(),
                    format!("`{}` must not be negative", self.child_path(key)),
                );
                None
            }
        }
    }

    /// A number (integer or float), e.g. a price.
    pub(crate) fn number(&self, sink: &mut Sink, key: &str) -> Option<Sp<f64>> {
        let (span, item) = self.get(key)?;
        let v = item
            .as_float()
            .or_else(|| item.as_integer().map(|i| i as f64));
        match v {
            Some(v) if v.is_finite() && v >= 0.0 => Some(Sp { value: v, span }),
            Some(_) => {
                sink.error(
                    span.as_ref(),
                    format!("`{}` must be a non-negative number", self.child_path(key)),
                );
                None
            }
            None => {
                self.mistyped(sink, key, span, "a number", item);
                None
            }
        }
    }

    /// An array of strings; a single string is accepted as a one-element list.
    pub(crate) fn str_list(&self, sink: &mut Sink, key: &str) -> Option<Vec<Sp<String>>> {
        let (span, item) = self.get(key)?;
        if let Some(s) = item.as_str() {
            return Some(vec![Sp {
                value: s.to_string(),
                span,
            }]);
        }
        let Some(arr) = item.as_array() else {
            self.mistyped(sink, key, span, "an array of strings", item);
            return None;
        };
        let mut out = Vec::new();
        for v in arr.iter() {
            match v.as_str() {
                Some(s) => out.push(Sp {
                    value: s.to_string(),
                    span: v.span(),
                }),
                None => sink.error(
                    v.span().as_ref(),
                    format!("`{}` must contain only strings", self.child_path(key)),
                ),
            }
        }
        Some(out)
    }

    /// An array whose items are strings or integers (e.g. fallback triggers).
    pub(crate) fn values(&self, sink: &mut Sink, key: &str) -> Option<Vec<Sp<Value>>> {
        let (span, item) = self.get(key)?;
        let Some(arr) = item.as_array() else {
            self.mistyped(sink, key, span, "an array", item);
            return None;
        };
        Some(
            arr.iter()
                .map(|v| Sp {
                    value: v.clone(),
                    span: v.span(),
                })
                .collect(),
        )
    }

    pub(crate) fn table(&self, sink: &mut Sink, key: &str) -> Option<Obj<'a>> {
        let (span, item) = self.get(key)?;
        match item.as_table_like() {
            Some(table) => Some(Obj {
                table,
                span: span.or_else(|| self.key_span(key)),
                path: self.child_path(key),
            }),
            None => {
                self.mistyped(sink, key, span, "a table", item);
                None
            }
        }
    }

    /// `[[key]]` tables, or an inline array of inline tables.
    pub(crate) fn tables(&self, sink: &mut Sink, key: &str) -> Vec<Obj<'a>> {
        let Some((span, item)) = self.get(key) else {
            return Vec::new();
        };
        let path = self.child_path(key);
        if let Some(aot) = item.as_array_of_tables() {
            return aot
                .iter()
                .enumerate()
                .map(|(i, t)| Obj {
                    table: t,
                    span: t.span(),
                    path: format!("{path}[{i}]"),
                })
                .collect();
        }
        if let Some(arr) = item.as_array() {
            let mut out = Vec::new();
            for (i, v) in arr.iter().enumerate() {
                match v.as_inline_table() {
                    Some(t) => out.push(Obj {
                        table: t,
                        span: v.span(),
                        path: format!("{path}[{i}]"),
                    }),
                    None => sink.error(v.span().as_ref(), format!("`{path}` must contain tables")),
                }
            }
            return out;
        }
        self.mistyped(sink, key, span, "an array of tables (`[[...]]`)", item);
        Vec::new()
    }

    /// Every (key, item) pair, for maps with user-chosen keys.
    pub(crate) fn entries(&self) -> Vec<(Sp<String>, &'a Item)> {
        self.table
            .iter()
            .map(|(k, item)| {
                let span = self
                    .table
                    .get_key_value(k)
                    .and_then(|(key, _)| key.span())
                    .or_else(|| item_span(item));
                (
                    Sp {
                        value: k.to_string(),
                        span,
                    },
                    item,
                )
            })
            .collect()
    }

    /// Reports every key not in `known`, with a "did you mean".
    pub(crate) fn deny_unknown(&self, sink: &mut Sink, known: &[&str]) {
        for (k, _) in self.table.iter() {
            if !known.contains(&k) {
                let span = self.key_span(k);
                let place = if self.path.is_empty() {
                    "at the top level".to_string()
                } else {
                    format!("in `{}`", self.path)
                };
                sink.error_help(
                    span.as_ref(),
                    format!("unknown key `{k}` {place}"),
                    suggest(k, known),
                );
            }
        }
    }
}
