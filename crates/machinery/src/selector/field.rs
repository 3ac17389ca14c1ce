//! Field selectors (`?fieldSelector=spec.nodeName=n1,status.phase!=Failed`), as
//! k8s.io/apimachinery/pkg/fields parses them: terms split on unescaped commas, each term on
//! its first `!=`, `==` or `=`, values unescaped (`\,`, `\=`, `\\`). Keys are not validated
//! here: which fields a kind supports is the caller's check against the registry.

use serde_json::Value;

use super::SelectorError;

/// How a field requirement compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOperator {
    /// `a=b` or `a==b`.
    Equals,
    /// `a!=b`.
    NotEquals,
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field, e.g. `spec.nodeName`.
    pub field: String,
    /// Equality or inequality.
    pub operator: FieldOperator,
    /// The unescaped value.
    pub value: String,
}

/// A parsed field selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` query syntax. An empty string selects everything; an
    /// empty term (`a=b,,`, `,a=b`) is refused: upstream's parser skips it, but a selector
    /// with a stray comma is a client bug better reported than silently narrowed.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut terms = split_terms(selector);
        terms.sort();
        let mut requirements = Vec::new();
        for term in terms {
            let Some((field, operator, value)) = split_term(term) else {
                return Err(SelectorError::FieldTerm {
                    selector: selector.to_string(),
                    term: term.to_string(),
                });
            };
            requirements.push(FieldRequirement {
                field: field.to_string(),
                operator,
                value: unescape(value)?,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// The requirements, in upstream's order (sorted by term text).
    pub fn requirements(&self) -> &[FieldRequirement] {
        &self.requirements
    }

    /// Whether this selects everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// Whether an object is selected; `get` returns a field's value, `None` counting as the
    /// empty string as upstream (so `spec.nodeName=` selects unscheduled pods).
    pub fn matches(&self, get: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| {
            let value = get(&r.field).unwrap_or_default();
            match r.operator {
                FieldOperator::Equals => value == r.value,
                FieldOperator::NotEquals => value != r.value,
            }
        })
    }

    /// The selector in query syntax, values escaped (`metadata.name=a\,b`).
    pub fn to_selector_string(&self) -> String {
        self.requirements
            .iter()
            .map(|r| {
                let operator = match r.operator {
                    FieldOperator::Equals => "=",
                    FieldOperator::NotEquals => "!=",
                };
                format!("{}{operator}{}", r.field, escape(&r.value))
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The value at a dotted path (`spec.nodeName`, `involvedObject.kind`) as field selectors
/// compare it: strings as they are, booleans and numbers printed (`true`, `3`), a missing or
/// null field as `""`. `None` only when the path crosses something that is not an object.
pub fn field_value(object: &Value, path: &str) -> Option<String> {
    let mut current = object;
    for segment in path.split('.') {
        match current {
            Value::Object(map) => match map.get(segment) {
                Some(next) => current = next,
                None => return Some(String::new()),
            },
            Value::Null => return Some(String::new()),
            _ => return None,
        }
    }
    match current {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

/// Splits on commas not preceded by a backslash escape, keeping the escapes.
fn split_terms(selector: &str) -> Vec<&str> {
    if selector.is_empty() {
        return Vec::new();
    }
    let mut terms = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in selector.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == ',' {
            terms.push(&selector[start..i]);
            start = i + 1;
        }
    }
    terms.push(&selector[start..]);
    terms
}

/// Splits a term at the first position where `!=`, `==` or `=` starts.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (text, operator) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(value) = rest.strip_prefix(text) {
                return Some((&term[..i], operator, value));
            }
        }
    }
    None
}

fn unescape(value: &str) -> Result<String, SelectorError> {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('\\' | ',' | '=')) => out.push(escaped),
                Some(other) => {
                    return Err(SelectorError::FieldValue(format!(
                        "invalid escape sequence: \\{other}"
                    )));
                }
                None => {
                    return Err(SelectorError::FieldValue(
                        "invalid escape sequence: \\".to_string(),
                    ));
                }
            },
            ',' | '=' => {
                return Err(SelectorError::FieldValue(format!(
                    "unescaped character in value: {c}"
                )));
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace('=', "\\=")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse(input: &str) -> Vec<(String, FieldOperator, String)> {
        FieldSelector::parse(input)
            .unwrap_or_else(|e| panic!("{input:?} should parse: {e}"))
            .requirements()
            .iter()
            .map(|r| (r.field.clone(), r.operator, r.value.clone()))
            .collect()
    }

    #[test]
    fn terms_split_on_unescaped_commas_and_the_first_operator() {
        use FieldOperator::{Equals, NotEquals};
        let own = |f: &str, o, v: &str| (f.to_string(), o, v.to_string());
        assert_eq!(parse(""), vec![]);
        assert_eq!(
            parse("spec.nodeName="),
            vec![own("spec.nodeName", Equals, "")]
        );
        assert_eq!(
            parse("status.phase!=Failed,metadata.name==web"),
            vec![
                own("metadata.name", Equals, "web"),
                own("status.phase", NotEquals, "Failed"),
            ]
        );
        assert_eq!(
            parse(r"metadata.name=a\,b\=c\\d"),
            vec![own("metadata.name", Equals, r"a,b=c\d")]
        );
    }

    #[test]
    fn malformed_terms_and_escapes_are_rejected() {
        let cases = [
            ("a", "invalid selector: 'a'; can't understand 'a'"),
            ("a=b,c", "invalid selector: 'a=b,c'; can't understand 'c'"),
            ("a=b,,", "invalid selector: 'a=b,,'; can't understand ''"),
            (",a=b", "invalid selector: ',a=b'; can't understand ''"),
            (
                "a=b=c",
                "invalid field selector: unescaped character in value: =",
            ),
            (
                r"a=b\x",
                r"invalid field selector: invalid escape sequence: \x",
            ),
            (
                r"a=b\",
                r"invalid field selector: invalid escape sequence: \",
            ),
        ];
        for (input, message) in cases {
            let error = FieldSelector::parse(input).expect_err(input);
            assert_eq!(error.to_string(), message, "input {input:?}");
        }
    }

    #[test]
    fn selectors_print_back_escaped() {
        let selector = FieldSelector::parse(r"b!=x,a=1\,2").expect("valid");
        assert_eq!(selector.to_selector_string(), r"a=1\,2,b!=x");
    }

    #[test]
    fn matching_reads_fields_with_missing_as_empty() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"hostNetwork": true, "priority": 5},
            "status": {"phase": "Pending"},
        });
        let get = |path: &str| field_value(&pod, path);
        let cases = [
            ("", true),
            ("spec.nodeName=", true),
            ("spec.nodeName!=", false),
            ("metadata.name=web,status.phase=Pending", true),
            ("metadata.name=web,status.phase!=Pending", false),
            ("spec.hostNetwork=true", true),
            ("spec.priority=5", true),
        ];
        for (input, expected) in cases {
            let selector = FieldSelector::parse(input).expect(input);
            assert_eq!(selector.matches(get), expected, "selector {input:?}");
        }
        assert_eq!(field_value(&pod, "metadata.name.x"), None);
        assert_eq!(field_value(&pod, "metadata"), None);
        assert_eq!(
            field_value(&pod, "spec.missing.deeper"),
            Some(String::new())
        );
    }
}
