//! Label selectors: the string syntax of k8s.io/apimachinery/pkg/labels (`a=b,c in (x,y),!d`)
//! and the `metav1.LabelSelector` object (`matchLabels` + `matchExpressions`).
//!
//! The parser follows upstream's lexer and recursive descent token for token, because users
//! read its error messages and clients rely on its corner cases (`a in (,x)` holds the empty
//! value, `a=` selects an empty value, `in` is a key where a key is expected).

use serde_json::{Map, Value};

use super::SelectorError;
use super::validation::{validate_key, validate_value};

/// How a requirement compares a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    /// `a=b`: the label is present with this value.
    Equals,
    /// `a==b`: as `=`.
    DoubleEquals,
    /// `a!=b`: the label is absent or has another value.
    NotEquals,
    /// `a in (x,y)`: present with one of the values.
    In,
    /// `a notin (x,y)`: absent or with none of the values.
    NotIn,
    /// `a`: present.
    Exists,
    /// `!a`: absent.
    DoesNotExist,
    /// `a>1`: present with an integer value greater than this one.
    GreaterThan,
    /// `a<1`: present with an integer value less than this one.
    LessThan,
}

/// One requirement of a label selector: a key, an operator and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    /// Sorted and without duplicates, as upstream keeps them (a set).
    values: Vec<String>,
}

/// A parsed label selector: every requirement must hold.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
    /// A null `metav1.LabelSelector` selects nothing (upstream `labels.Nothing()`).
    nothing: bool,
}

impl Requirement {
    /// A validated requirement (key, values and their number checked against the operator).
    pub fn new(key: &str, operator: Operator, values: Vec<String>) -> Result<Self, SelectorError> {
        validate_key(key)?;
        let mut values = values;
        values.sort();
        values.dedup();
        let reason = match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                Some("for 'in', 'notin' operators, values set can't be empty")
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                Some("exact-match compatibility requires one single value")
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                Some("values set must be empty for exists and does not exist")
            }
            Operator::GreaterThan | Operator::LessThan if values.len() != 1 => {
                Some("for 'Gt', 'Lt' operators, exactly one value is required")
            }
            Operator::GreaterThan | Operator::LessThan if values[0].parse::<i64>().is_err() => {
                Some("for 'Gt', 'Lt' operators, the value must be an integer")
            }
            _ => None,
        };
        if let Some(reason) = reason {
            return Err(SelectorError::Values {
                values,
                reason: reason.to_string(),
            });
        }
        for value in &values {
            validate_value(key, value)?;
        }
        Ok(Requirement {
            key: key.to_string(),
            operator,
            values,
        })
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values, sorted.
    pub fn values(&self) -> &[String] {
        &self.values
    }

    /// Whether `labels` satisfy this requirement.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = labels.and_then(|l| l.get(&self.key)).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let in_values = |v: &String| self.values.iter().any(|x| x == v);
        match self.operator {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.as_ref().is_some_and(in_values)
            }
            Operator::NotEquals | Operator::NotIn => !value.as_ref().is_some_and(in_values),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(have), Some(want)) = (
                    value.and_then(|v| v.parse::<i64>().ok()),
                    self.values.first().and_then(|v| v.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }

    /// The requirement in selector syntax (`a in (x,y)`, `!a`, `a>1`).
    pub fn to_selector_string(&self) -> String {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.operator {
            Operator::Equals => format!("{}={first}", self.key),
            Operator::DoubleEquals => format!("{}=={first}", self.key),
            Operator::NotEquals => format!("{}!={first}", self.key),
            Operator::GreaterThan => format!("{}>{first}", self.key),
            Operator::LessThan => format!("{}<{first}", self.key),
            Operator::In => format!("{} in ({})", self.key, self.values.join(",")),
            Operator::NotIn => format!("{} notin ({})", self.key, self.values.join(",")),
            Operator::Exists => self.key.clone(),
            Operator::DoesNotExist => format!("!{}", self.key),
        }
    }
}

impl LabelSelector {
    /// Parses the `labelSelector` query syntax. An empty string selects everything.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let mut parser = Parser {
            tokens: lex(selector),
            position: 0,
        };
        let mut requirements = parser.parse()?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Converts a `metav1.LabelSelector` object: `null` selects nothing, `{}` everything.
    pub fn from_json(selector: &Value) -> Result<Self, SelectorError> {
        let object = match selector {
            Value::Null => {
                return Ok(LabelSelector {
                    requirements: Vec::new(),
                    nothing: true,
                });
            }
            Value::Object(object) => object,
            other => return Err(SelectorError::Object(format!("not an object: {other}"))),
        };
        let mut requirements = Vec::new();
        if let Some(labels) = object.get("matchLabels").filter(|v| !v.is_null()) {
            let labels = labels
                .as_object()
                .ok_or_else(|| SelectorError::Object("matchLabels is not an object".into()))?;
            for (key, value) in labels {
                let value = value.as_str().ok_or_else(|| {
                    SelectorError::Object(format!("matchLabels[{key}] is not a string"))
                })?;
                requirements.push(Requirement::new(
                    key,
                    Operator::Equals,
                    vec![value.to_string()],
                )?);
            }
        }
        if let Some(expressions) = object.get("matchExpressions").filter(|v| !v.is_null()) {
            let expressions = expressions
                .as_array()
                .ok_or_else(|| SelectorError::Object("matchExpressions is not a list".into()))?;
            for expression in expressions {
                requirements.push(expression_requirement(expression)?);
            }
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector {
            requirements,
            nothing: false,
        })
    }

    /// Whether an object with these `metadata.labels` is selected.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        !self.nothing && self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selects everything (no requirements).
    pub fn is_empty(&self) -> bool {
        !self.nothing && self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The selector in query syntax, requirements sorted by key (`app=web,tier in (a,b)`);
    /// empty for "everything" and "nothing", as upstream's `String()`.
    pub fn to_selector_string(&self) -> String {
        self.requirements
            .iter()
            .map(Requirement::to_selector_string)
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// One `matchExpressions` entry.
fn expression_requirement(expression: &Value) -> Result<Requirement, SelectorError> {
    let key = expression
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| SelectorError::Object("matchExpressions entry without a key".into()))?;
    let operator = match expression.get("operator").and_then(Value::as_str) {
        Some("In") => Operator::In,
        Some("NotIn") => Operator::NotIn,
        Some("Exists") => Operator::Exists,
        Some("DoesNotExist") => Operator::DoesNotExist,
        other => {
            return Err(SelectorError::Object(format!(
                "{:?} is not a valid label selector operator",
                other.unwrap_or("")
            )));
        }
    };
    let values = match expression.get("values") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(values)) => values
            .iter()
            .map(|v| {
                v.as_str().map(str::to_string).ok_or_else(|| {
                    SelectorError::Object(format!("values of {key:?} must be strings"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(SelectorError::Object(format!(
                "values of {key:?} is not a list"
            )));
        }
    };
    Requirement::new(key, operator, values)
}

/// A lexer token: its kind and the text it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Identifier,
    In,
    NotIn,
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    GreaterThan,
    LessThan,
    OpenParen,
    CloseParen,
    Comma,
    Error,
    End,
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn symbol(text: &str) -> Option<Token> {
    Some(match text {
        "=" => Token::Equals,
        "==" => Token::DoubleEquals,
        "!=" => Token::NotEquals,
        "!" => Token::Bang,
        ">" => Token::GreaterThan,
        "<" => Token::LessThan,
        "(" => Token::OpenParen,
        ")" => Token::CloseParen,
        "," => Token::Comma,
        _ => return None,
    })
}

/// Splits the input as upstream's lexer: runs of special characters become the longest
/// known symbol, anything else up to whitespace or a special character an identifier
/// (or the keywords `in`, `notin`).
/// Upstream's whitespace: only these separate tokens; other Unicode spaces (a vertical tab)
/// are part of a word, which validation then rejects.
fn is_blank(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn lex(input: &str) -> Vec<(Token, String)> {
    let chars: Vec<char> = input.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if is_blank(c) {
            i += 1;
        } else if is_special(c) {
            let mut buffer = String::new();
            let mut last: Option<(Token, String)> = None;
            while i < chars.len() && is_special(chars[i]) {
                buffer.push(chars[i]);
                match symbol(&buffer) {
                    Some(token) => last = Some((token, buffer.clone())),
                    None if last.is_some() => break,
                    None => {}
                }
                i += 1;
            }
            tokens.push(last.unwrap_or_else(|| {
                (
                    Token::Error,
                    format!("error expected: keyword found '{buffer}'"),
                )
            }));
        } else {
            let start = i;
            // The same whitespace as above: a word that stopped at another space would be
            // empty and never advance (an endless loop found by fuzzing).
            while i < chars.len() && !is_special(chars[i]) && !is_blank(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let token = match word.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            tokens.push((token, word));
        }
    }
    tokens
}

struct Parser {
    tokens: Vec<(Token, String)>,
    position: usize,
}

fn unexpected(found: &str, expected: &str) -> SelectorError {
    SelectorError::Unexpected {
        found: found.to_string(),
        expected: expected.to_string(),
    }
}

impl Parser {
    /// The next token, with `in`/`notin` read as identifiers when `as_value` (upstream's
    /// `Values` mode).
    fn peek(&self, as_value: bool) -> (Token, String) {
        let (token, text) = self
            .tokens
            .get(self.position)
            .cloned()
            .unwrap_or((Token::End, String::new()));
        match token {
            Token::In | Token::NotIn if as_value => (Token::Identifier, text),
            _ => (token, text),
        }
    }

    fn next(&mut self, as_value: bool) -> (Token, String) {
        let token = self.peek(as_value);
        self.position += 1;
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            let (token, text) = self.peek(true);
            match token {
                Token::Identifier | Token::Bang => {
                    let requirement = self
                        .requirement()
                        .map_err(|e| SelectorError::Requirement(Box::new(e)))?;
                    requirements.push(requirement);
                    let (token, text) = self.next(true);
                    match token {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (after, text) = self.peek(true);
                            if after != Token::Identifier && after != Token::Bang {
                                return Err(unexpected(&text, "identifier after ','"));
                            }
                        }
                        _ => return Err(unexpected(&text, "',' or 'end of string'")),
                    }
                }
                Token::End => return Ok(requirements),
                _ => return Err(unexpected(&text, "!, identifier, or 'end of string'")),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, SelectorError> {
        let (mut token, mut key) = self.next(true);
        let negated = token == Token::Bang;
        if negated {
            (token, key) = self.next(true);
        }
        if token != Token::Identifier {
            return Err(unexpected(&key, "identifier"));
        }
        validate_key(&key)?;
        let (after, _) = self.peek(true);
        if negated {
            return Requirement::new(&key, Operator::DoesNotExist, Vec::new());
        }
        if after == Token::End || after == Token::Comma {
            return Requirement::new(&key, Operator::Exists, Vec::new());
        }
        let (token, text) = self.next(false);
        let operator = match token {
            Token::In => Operator::In,
            Token::NotIn => Operator::NotIn,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::NotEquals => Operator::NotEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            _ => return Err(unexpected(&text, "in, notin, =, ==, !=, gt, lt")),
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.value_set()?,
            _ => vec![self.exact_value()?],
        };
        Requirement::new(&key, operator, values)
    }

    /// `(x,y)`; `()` and empty slots hold the empty value.
    fn value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let (token, text) = self.next(true);
        if token != Token::OpenParen {
            return Err(SelectorError::Unexpected {
                found: text,
                expected: "'('".to_string(),
            });
        }
        let (token, text) = self.peek(true);
        match token {
            Token::CloseParen => {
                self.next(true);
                Ok(vec![String::new()])
            }
            Token::Identifier | Token::Comma => {
                let values = self.identifier_list()?;
                let (token, text) = self.next(true);
                if token != Token::CloseParen {
                    return Err(unexpected(&text, "')'"));
                }
                Ok(values)
            }
            _ => Err(unexpected(&text, "',', ')' or identifier")),
        }
    }

    fn identifier_list(&mut self) -> Result<Vec<String>, SelectorError> {
        let mut values = Vec::new();
        loop {
            let (token, text) = self.next(true);
            match token {
                Token::Identifier => {
                    values.push(text);
                    let (after, text) = self.peek(true);
                    match after {
                        Token::Comma => continue,
                        Token::CloseParen => return Ok(values),
                        _ => return Err(unexpected(&text, "',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    match self.peek(true).0 {
                        Token::CloseParen => {
                            values.push(String::new());
                            return Ok(values);
                        }
                        Token::Comma => {
                            self.next(true);
                            values.push(String::new());
                        }
                        _ => {}
                    }
                }
                _ => return Err(unexpected(&text, "',', or identifier")),
            }
        }
    }

    /// The value after `=`, `!=`, `>`...; nothing before `,` or the end is the empty value.
    fn exact_value(&mut self) -> Result<String, SelectorError> {
        let (token, _) = self.peek(true);
        if token == Token::End || token == Token::Comma {
            return Ok(String::new());
        }
        let (token, text) = self.next(true);
        if token == Token::Identifier {
            Ok(text)
        } else {
            Err(unexpected(&text, "identifier"))
        }
    }
}

#[cfg(test)]
#[path = "label_tests.rs"]
mod tests;
