//! A small regular-expression matcher for KIP-848 topic subscriptions (`subscribed_topic_regex`,
//! RE2/J syntax, matched against the whole topic name as Kafka's `Pattern.matcher().matches()`).
//!
//! It covers what subscriptions use: literals and escapes, `.`, character classes (ranges,
//! negation, `\d \w \s`), groups `( )` and `(?: )`, alternation, `* + ? {n} {n,} {n,m}` (lazy
//! forms accepted; greediness does not change a full match), and the anchors `^ $`. Topic names
//! are short, so a backtracking matcher over the parsed tree is enough.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegexError(pub String);

#[derive(Debug, Clone)]
enum Node {
    Char(char),
    Any,
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
    Start,
    End,
    Group(Vec<Vec<Node>>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

#[derive(Debug, Clone)]
pub struct TopicRegex {
    alternatives: Vec<Vec<Node>>,
}

impl TopicRegex {
    pub fn parse(pattern: &str) -> Result<TopicRegex, RegexError> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut parser = Parser {
            chars: &chars,
            pos: 0,
        };
        let alternatives = parser.alternation()?;
        if parser.pos != chars.len() {
            return Err(RegexError(format!("unmatched ')' at {}", parser.pos)));
        }
        Ok(TopicRegex { alternatives })
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        let group = [Node::Group(self.alternatives.clone())];
        match_seq(&group, &chars, 0, &mut |p| p == chars.len())
    }
}

const DIGIT: &[(char, char)] = &[('0', '9')];
const WORD: &[(char, char)] = &[('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
const SPACE: &[(char, char)] = &[(' ', ' '), ('\t', '\r')];

struct Parser<'a> {
    chars: &'a [char],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<char, RegexError> {
        let c = self
            .peek()
            .ok_or_else(|| RegexError("unexpected end of pattern".into()))?;
        self.pos += 1;
        Ok(c)
    }

    fn alternation(&mut self) -> Result<Vec<Vec<Node>>, RegexError> {
        let mut alternatives = vec![self.sequence()?];
        while self.peek() == Some('|') {
            self.pos += 1;
            alternatives.push(self.sequence()?);
        }
        Ok(alternatives)
    }

    fn sequence(&mut self) -> Result<Vec<Node>, RegexError> {
        let mut seq = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            let atom = self.quantified(atom)?;
            seq.push(atom);
        }
        Ok(seq)
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, RegexError> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => match self.bounds()? {
                Some(b) => b,
                None => return Ok(atom),
            },
            _ => return Ok(atom),
        };
        // The operator character (or the closing brace of `{..}`).
        self.pos += 1;
        if matches!(atom, Node::Start | Node::End) {
            return Err(RegexError("nothing to repeat".into()));
        }
        // A lazy (`*?`) or possessive (`*+`) suffix: the set of full matches is the same.
        if matches!(self.peek(), Some('?' | '+')) {
            self.pos += 1;
        }
        if matches!(self.peek(), Some('*' | '+' | '?')) {
            return Err(RegexError("multiple repetition operators".into()));
        }
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    /// `{n}`, `{n,}`, `{n,m}` after the current `{`; None (and nothing consumed) when the brace
    /// is a literal.
    fn bounds(&mut self) -> Result<Option<(u32, Option<u32>)>, RegexError> {
        let rest: String = self.chars[self.pos..].iter().collect();
        let Some(end) = rest.find('}') else {
            return Ok(None);
        };
        let body = &rest[1..end];
        let parse = |s: &str| s.parse::<u32>().ok().filter(|n| *n <= 1000);
        let bounds = match body.split_once(',') {
            None => parse(body).map(|n| (n, Some(n))),
            Some((lo, "")) => parse(lo).map(|n| (n, None)),
            Some((lo, hi)) => match (parse(lo), parse(hi)) {
                (Some(lo), Some(hi)) if lo <= hi => Some((lo, Some(hi))),
                (Some(_), Some(_)) => return Err(RegexError("bad repetition range".into())),
                _ => None,
            },
        };
        if bounds.is_some() {
            // Up to the closing brace, which `quantified` consumes as the operator.
            self.pos += body.chars().count() + 1;
        }
        Ok(bounds)
    }

    fn atom(&mut self) -> Result<Node, RegexError> {
        match self.next()? {
            '.' => Ok(Node::Any),
            '^' => Ok(Node::Start),
            '$' => Ok(Node::End),
            '(' => {
                if self.peek() == Some('?') {
                    self.pos += 1;
                    if self.next()? != ':' {
                        return Err(RegexError("unsupported group flags".into()));
                    }
                }
                let alternatives = self.alternation()?;
                if self.next()? != ')' {
                    return Err(RegexError("missing ')'".into()));
                }
                Ok(Node::Group(alternatives))
            }
            '[' => self.class(),
            '\\' => self.escape(),
            c @ ('*' | '+' | '?') => Err(RegexError(format!("missing argument to repetition operator {c}"))),
            c => Ok(Node::Char(c)),
        }
    }

    fn escape(&mut self) -> Result<Node, RegexError> {
        let c = self.next()?;
        let class = |ranges: &[(char, char)], negated| Node::Class {
            ranges: ranges.to_vec(),
            negated,
        };
        Ok(match c {
            'd' => class(DIGIT, false),
            'D' => class(DIGIT, true),
            'w' => class(WORD, false),
            'W' => class(WORD, true),
            's' => class(SPACE, false),
            'S' => class(SPACE, true),
            'A' => Node::Start,
            'z' => Node::End,
            'n' => Node::Char('\n'),
            't' => Node::Char('\t'),
            c if c.is_ascii_alphanumeric() => return Err(RegexError(format!("unsupported escape \\{c}"))),
            c => Node::Char(c),
        })
    }

    fn class(&mut self) -> Result<Node, RegexError> {
        let negated = self.peek() == Some('^');
        if negated {
            self.pos += 1;
        }
        let mut ranges = Vec::new();
        let mut first = true;
        loop {
            let c = self.next()?;
            if c == ']' && !first {
                break;
            }
            first = false;
            let lo = if c == '\\' {
                match self.next()? {
                    'd' => {
                        ranges.extend_from_slice(DIGIT);
                        continue;
                    }
                    'w' => {
                        ranges.extend_from_slice(WORD);
                        continue;
                    }
                    's' => {
                        ranges.extend_from_slice(SPACE);
                        continue;
                    }
                    c if c.is_ascii_alphanumeric() => {
                        return Err(RegexError(format!("unsupported escape \\{c} in class")))
                    }
                    c => c,
                }
            } else {
                c
            };
            if self.peek() == Some('-') && self.chars.get(self.pos + 1).is_some_and(|c| *c != ']') {
                self.pos += 1;
                let mut hi = self.next()?;
                if hi == '\\' {
                    hi = self.next()?;
                }
                if hi < lo {
                    return Err(RegexError(format!("bad character class range {lo}-{hi}")));
                }
                ranges.push((lo, hi));
            } else {
                ranges.push((lo, lo));
            }
        }
        Ok(Node::Class { ranges, negated })
    }
}

fn match_one(node: &Node, c: char) -> bool {
    match node {
        Node::Char(x) => *x == c,
        Node::Any => c != '\n',
        Node::Class { ranges, negated } => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *negated,
        _ => false,
    }
}

/// Matches `seq` at `pos`, calling `k` with every end position until it accepts.
fn match_seq(seq: &[Node], text: &[char], pos: usize, k: &mut dyn FnMut(usize) -> bool) -> bool {
    let Some((node, rest)) = seq.split_first() else {
        return k(pos);
    };
    match node {
        Node::Start => pos == 0 && match_seq(rest, text, pos, k),
        Node::End => pos == text.len() && match_seq(rest, text, pos, k),
        Node::Group(alternatives) => alternatives
            .iter()
            .any(|branch| match_seq(branch, text, pos, &mut |p| match_seq(rest, text, p, k))),
        Node::Repeat { node, min, max } => repeat(node, *min, *max, 0, rest, text, pos, k),
        single => text.get(pos).is_some_and(|c| match_one(single, *c)) && match_seq(rest, text, pos + 1, k),
    }
}

#[allow(clippy::too_many_arguments)]
fn repeat(
    node: &Node,
    min: u32,
    max: Option<u32>,
    count: u32,
    rest: &[Node],
    text: &[char],
    pos: usize,
    k: &mut dyn FnMut(usize) -> bool,
) -> bool {
    if max.is_none_or(|m| count < m) {
        let once = std::slice::from_ref(node);
        let more = match_seq(once, text, pos, &mut |p| {
            // An iteration that consumed nothing cannot lead anywhere new.
            (p > pos || count < min) && repeat(node, min, max, count + 1, rest, text, p, k)
        });
        if more {
            return true;
        }
    }
    count >= min && match_seq(rest, text, pos, k)
}

#[cfg(test)]
mod tests {
    use super::TopicRegex;

    fn m(pattern: &str, text: &str) -> bool {
        TopicRegex::parse(pattern).expect("valid").matches(text)
    }

    #[test]
    fn matches_whole_topic_names() {
        assert!(m("orders", "orders"));
        assert!(!m("orders", "orders-eu"));
        assert!(m("orders.*", "orders-eu"));
        assert!(m("^orders-(eu|us)$", "orders-us"));
        assert!(!m("orders-(eu|us)", "orders-asia"));
        assert!(m("t[0-9]+", "t42"));
        assert!(!m("t[0-9]+", "t"));
        assert!(m("t[^a-c]?x", "tdx"));
        assert!(m("t[^a-c]?x", "tx"));
        assert!(!m("t[^a-c]x", "tbx"));
        assert!(m(r"a\.b", "a.b"));
        assert!(!m(r"a\.b", "axb"));
        assert!(m(r"log-\d{2,3}", "log-123"));
        assert!(!m(r"log-\d{2,3}", "log-1"));
        assert!(m("(?:a|b)*c", "ababc"));
        assert!(m(".*", ""));
        assert!(m("a|", ""));
        assert!(m("(a*)*b", "aaab"));
        assert!(m("[-_a]+", "_-a"));
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in ["(a", "a)", "[a", "*a", "a**", r"\p", "(?i)a", "[z-a]"] {
            assert!(TopicRegex::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
