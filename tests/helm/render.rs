//! A small renderer for the subset of Helm's Go templates that `helm/capstan` uses, because
//! no `helm` binary can be installed on the build machines (see helm/README.md). It handles
//! exactly: text with `{{ }}` actions and `{{-`/`-}}` trimming; comments `{{/* */}}`;
//! `define`/`include`; `if`/`else if`/`else`/`end`; `range` over a list (`.` is the item);
//! field paths (`.Values.a.b`, `.Release.Name`, `.`); string and integer literals;
//! parenthesised calls; pipes; and the functions `default`, `quote`, `toYaml`, `nindent`,
//! `trunc`, `trimSuffix`, `printf` (`%s` only), `required`, `not`, `eq`. Anything else is an
//! error, so a template using more fails the test instead of rendering wrongly.

use std::collections::HashMap;

use serde_json::Value;

/// A parsed template node.
#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Output(String),
    If(Vec<(String, Vec<Node>)>, Vec<Node>),
    Range(String, Vec<Node>),
}

/// Templates by name (`define`d blocks) and files.
pub struct Renderer {
    defines: HashMap<String, Vec<Node>>,
}

/// Splits text into text pieces and actions, applying `{{-` and `-}}` trimming.
fn lex(source: &str) -> Result<Vec<(bool, String)>, String> {
    let mut pieces: Vec<(bool, String)> = Vec::new();
    let mut rest = source;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or("unclosed {{")?;
        let mut body = &after[..end];
        if let Some(stripped) = body.strip_prefix('-') {
            text = text.trim_end().to_string();
            body = stripped;
        }
        trim_next = false;
        if let Some(stripped) = body.strip_suffix('-') {
            trim_next = true;
            body = stripped;
        }
        pieces.push((false, text));
        pieces.push((true, body.trim().to_string()));
        rest = &after[end + 2..];
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    pieces.push((false, text.to_string()));
    Ok(pieces)
}

/// Parses pieces into nodes up to an `end`/`else` (returned as the terminator).
fn parse(
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<(bool, String)>>,
    defines: &mut HashMap<String, Vec<Node>>,
) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while let Some((action, body)) = pieces.next() {
        if !action {
            if !body.is_empty() {
                nodes.push(Node::Text(body));
            }
            continue;
        }
        if body.starts_with("/*") {
            continue;
        }
        let (word, rest) = body.split_once(' ').unwrap_or((body.as_str(), ""));
        match word {
            "end" | "else" => return Ok((nodes, Some(body.clone()))),
            "define" => {
                let name = rest.trim().trim_matches('"').to_string();
                let (inner, end) = parse(pieces, defines)?;
                if end.as_deref() != Some("end") {
                    return Err(format!("define {name}: missing end"));
                }
                defines.insert(name, inner);
            }
            "if" => {
                let mut branches = Vec::new();
                let mut condition = rest.trim().to_string();
                let otherwise = loop {
                    let (inner, end) = parse(pieces, defines)?;
                    branches.push((condition.clone(), inner));
                    match end.as_deref() {
                        Some("end") => break Vec::new(),
                        Some("else") => {
                            let (inner, end) = parse(pieces, defines)?;
                            if end.as_deref() != Some("end") {
                                return Err("else without end".into());
                            }
                            break inner;
                        }
                        Some(other) if other.starts_with("else if ") => {
                            condition = other["else if ".len()..].trim().to_string();
                        }
                        other => return Err(format!("if {condition}: ended by {other:?}")),
                    }
                };
                nodes.push(Node::If(branches, otherwise));
            }
            "range" => {
                let (inner, end) = parse(pieces, defines)?;
                if end.as_deref() != Some("end") {
                    return Err(format!("range {rest}: missing end"));
                }
                nodes.push(Node::Range(rest.trim().to_string(), inner));
            }
            "with" | "template" | "block" => return Err(format!("unsupported action {word}")),
            _ => nodes.push(Node::Output(body.clone())),
        }
    }
    Ok((nodes, None))
}

/// Splits an expression into words, keeping strings and parenthesised groups whole.
fn words(expression: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut depth = 0;
    let mut in_string = false;
    for c in expression.chars() {
        match c {
            '"' => {
                in_string = !in_string;
                current.push(c);
            }
            '(' if !in_string => {
                depth += 1;
                current.push(c);
            }
            ')' if !in_string => {
                depth -= 1;
                current.push(c);
            }
            ' ' if !in_string && depth == 0 => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ => current.push(c),
        }
    }
    if in_string || depth != 0 {
        return Err(format!("unbalanced expression: {expression}"));
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// Splits a pipeline on `|` outside strings and parentheses.
fn stages(expression: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut depth, mut in_string) = (0, false);
    for c in expression.chars() {
        match c {
            '"' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => depth -= 1,
            '|' if !in_string && depth == 0 => {
                out.push(std::mem::take(&mut current).trim().to_string());
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    out.push(current.trim().to_string());
    out
}

/// Go template truthiness.
fn truthy(value: &Value) -> bool {
    match value {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// How a value prints.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Renderer {
    /// Reads the `define`s of the helper files.
    pub fn new(helpers: &[&str]) -> Result<Renderer, String> {
        let mut defines = HashMap::new();
        for source in helpers {
            let mut pieces = lex(source)?.into_iter().peekable();
            parse(&mut pieces, &mut defines)?;
        }
        Ok(Renderer { defines })
    }

    /// Renders a template file with `dot` as `.`.
    pub fn render(&mut self, source: &str, dot: &Value) -> Result<String, String> {
        let mut pieces = lex(source)?.into_iter().peekable();
        let (nodes, end) = parse(&mut pieces, &mut self.defines)?;
        if let Some(end) = end {
            return Err(format!("unexpected {{{{ {end} }}}}"));
        }
        self.run(&nodes, dot)
    }

    fn run(&self, nodes: &[Node], dot: &Value) -> Result<String, String> {
        let mut out = String::new();
        for node in nodes {
            match node {
                Node::Text(text) => out.push_str(text),
                Node::Output(expression) => out.push_str(&text(&self.pipeline(expression, dot)?)),
                Node::If(branches, otherwise) => {
                    let mut chosen = otherwise;
                    for (condition, body) in branches {
                        if truthy(&self.pipeline(condition, dot)?) {
                            chosen = body;
                            break;
                        }
                    }
                    out.push_str(&self.run(chosen, dot)?);
                }
                Node::Range(expression, body) => match self.pipeline(expression, dot)? {
                    Value::Array(items) => {
                        for item in &items {
                            out.push_str(&self.run(body, item)?);
                        }
                    }
                    Value::Null => {}
                    other => return Err(format!("range over a non-list: {other}")),
                },
            }
        }
        Ok(out)
    }

    fn pipeline(&self, expression: &str, dot: &Value) -> Result<Value, String> {
        let mut value: Option<Value> = None;
        for stage in stages(expression) {
            let mut args = words(&stage)?;
            if args.is_empty() {
                return Err(format!("empty pipeline stage in {expression}"));
            }
            let first = args.remove(0);
            let mut values = args
                .iter()
                .map(|arg| self.term(arg, dot))
                .collect::<Result<Vec<_>, _>>()?;
            if let Some(previous) = value.take() {
                values.push(previous);
            }
            value = Some(if values.is_empty() && !is_function(&first) {
                self.term(&first, dot)?
            } else {
                self.call(&first, values)?
            });
        }
        value.ok_or_else(|| format!("empty expression {expression}"))
    }

    fn term(&self, term: &str, dot: &Value) -> Result<Value, String> {
        if let Some(inner) = term.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
            return self.pipeline(inner, dot);
        }
        if let Some(string) = term.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            return Ok(Value::String(string.to_string()));
        }
        if let Ok(number) = term.parse::<i64>() {
            return Ok(Value::from(number));
        }
        if term == "." {
            return Ok(dot.clone());
        }
        if let Some(path) = term.strip_prefix('.') {
            let mut value = dot;
            for field in path.split('.') {
                value = value.get(field).unwrap_or(&Value::Null);
            }
            return Ok(value.clone());
        }
        Err(format!("unsupported term {term}"))
    }

    fn call(&self, function: &str, args: Vec<Value>) -> Result<Value, String> {
        let arity = |n: usize| {
            if args.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "{function} takes {n} arguments, got {}",
                    args.len()
                ))
            }
        };
        Ok(match function {
            "include" => {
                arity(2)?;
                let name = text(&args[0]);
                let body = self
                    .defines
                    .get(&name)
                    .ok_or_else(|| format!("include of undefined template {name}"))?;
                Value::String(self.run(body, &args[1])?)
            }
            "default" => {
                arity(2)?;
                if truthy(&args[1]) {
                    args[1].clone()
                } else {
                    args[0].clone()
                }
            }
            "required" => {
                arity(2)?;
                if !truthy(&args[1]) {
                    return Err(format!("required: {}", text(&args[0])));
                }
                args[1].clone()
            }
            "quote" => {
                arity(1)?;
                Value::String(serde_json::to_string(&text(&args[0])).map_err(|e| e.to_string())?)
            }
            "not" => {
                arity(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            "eq" => {
                arity(2)?;
                Value::Bool(args[0] == args[1])
            }
            "trunc" => {
                arity(2)?;
                let n = args[0].as_u64().ok_or("trunc: count is not a number")? as usize;
                Value::String(text(&args[1]).chars().take(n).collect())
            }
            "trimSuffix" => {
                arity(2)?;
                let (suffix, s) = (text(&args[0]), text(&args[1]));
                Value::String(s.strip_suffix(suffix.as_str()).unwrap_or(&s).to_string())
            }
            "printf" => {
                let format = text(args.first().ok_or("printf needs a format")?);
                let mut out = String::new();
                let mut rest = args[1..].iter();
                let mut pieces = format.split("%s");
                out.push_str(pieces.next().unwrap_or_default());
                for piece in pieces {
                    out.push_str(&text(rest.next().ok_or("printf: too few arguments")?));
                    out.push_str(piece);
                }
                Value::String(out)
            }
            "toYaml" => {
                arity(1)?;
                let yaml = serde_saphyr::to_string(&args[0]).map_err(|e| e.to_string())?;
                Value::String(yaml.trim_end().to_string())
            }
            "nindent" => {
                arity(2)?;
                let n = args[0].as_u64().ok_or("nindent: count is not a number")? as usize;
                let pad = " ".repeat(n);
                let body = text(&args[1])
                    .lines()
                    .map(|line| format!("{pad}{line}"))
                    .collect::<Vec<_>>()
                    .join("\n");
                Value::String(format!("\n{body}"))
            }
            other => return Err(format!("unsupported function {other}")),
        })
    }
}

fn is_function(word: &str) -> bool {
    !word.starts_with('.')
        && !word.starts_with('"')
        && !word.starts_with('(')
        && word.parse::<i64>().is_err()
}
