//! Path queries over the item tree (PROTOCOLS.md 4.3; the reference's
//! `docs/path-queries.txt`, an XPath subset). Parsing is separate from evaluation; the tree
//! is seen through `Doc`, so both are tested without a store.
//!
//! Grammar (whitespace allowed between tokens):
//!
//! ```text
//! query     := '/' | '/' rel | '//' rel | rel
//! rel       := step (('/' | '//') step)*
//! step      := ('.' | '..' | NAME | '*') pred*
//! pred      := '[' or ']'
//! or        := and ('or' and)*
//! and       := unary ('and' unary)*
//! unary     := 'not' '(' or ')' | '(' or ')' | NUMBER | 'last' '(' ')'
//!            | '@' NAME '=' STRING
//! NAME      := (alphanumeric | '_' | '-') (alphanumeric | '_' | '-' | '.')*
//! STRING    := "'" [^']* "'" | '"' [^"]* '"'
//! ```
//!
//! Meaning: a relative query starts at the root (`*` = the root's children, `example` =
//! `/example`); `/` steps to children, `//` to descendants-or-self (the reference expands
//! `//foo` to `/descendant-or-self::foo`); `.` is self, `..` the parent. A name test matches
//! an item's `name` or its `_kind`; `*` matches anything. A predicate filters the step's
//! whole node set in document order: `[N]` keeps the zero-based N-th, `[last()]` the last,
//! `[@field='value']` those whose field equals the value. The result is in document order,
//! each node once. Anything else is an error: `Bad expr: QUERY`.

/// The tree as the evaluator sees it. Nodes are numbered in document order (depth first,
/// children in order), the root is 0, and a node's descendants are the numbers after it up
/// to `subtree_end`.
pub trait Doc {
    /// How many nodes there are.
    fn node_count(&self) -> usize;
    fn parent(&self, n: usize) -> Option<usize>;
    /// One past the last descendant of `n`.
    fn subtree_end(&self, n: usize) -> usize;
    /// Whether `n`'s name or short kind is `test`.
    fn name_matches(&self, n: usize, test: &str) -> bool;
    /// Whether `n`'s field (`name`, `_kind`, `title`, …) is `value`.
    fn field_is(&self, n: usize, field: &str, value: &str) -> bool;
}

/// The longest query accepted, and the deepest predicate nesting.
pub const MAX_QUERY_BYTES: usize = 4096;
const MAX_NESTING: usize = 32;

/// A parsed query.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    steps: Vec<Step>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Axis {
    Child,
    DescendantOrSelf,
    SelfNode,
    Parent,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Step {
    axis: Axis,
    /// `None`: any node.
    test: Option<String>,
    preds: Vec<Pred>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Pred {
    Position(usize),
    Last,
    FieldIs(String, String),
    Not(Box<Pred>),
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
}

/// A query the parser refused; `Display` is the reference's `Bad expr: QUERY`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadExpr(pub String);

impl std::fmt::Display for BadExpr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bad expr: {}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Slash,
    SlashSlash,
    Dot,
    DotDot,
    Star,
    LBracket,
    RBracket,
    LParen,
    RParen,
    At,
    Eq,
    Name(String),
    /// Digits only: a position in a predicate, a name test in a step.
    Number(String),
    Str(String),
}

fn is_name_start(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

fn tokenize(s: &str) -> Option<Vec<Tok>> {
    let mut out = Vec::new();
    let mut it = s.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        let tok = match c {
            c if c.is_whitespace() => continue,
            '/' => {
                if it.next_if(|&(_, c)| c == '/').is_some() {
                    Tok::SlashSlash
                } else {
                    Tok::Slash
                }
            }
            '.' => {
                if it.next_if(|&(_, c)| c == '.').is_some() {
                    Tok::DotDot
                } else {
                    Tok::Dot
                }
            }
            '*' => Tok::Star,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '@' => Tok::At,
            '=' => Tok::Eq,
            '\'' | '"' => {
                let start = i + 1;
                let end = loop {
                    match it.next() {
                        Some((j, q)) if q == c => break j,
                        Some(_) => {}
                        None => return None,
                    }
                };
                Tok::Str(s.get(start..end)?.to_string())
            }
            c if is_name_start(c) => {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = it.peek() {
                    if is_name_start(d) || d == '.' {
                        end = j + d.len_utf8();
                        it.next();
                    } else {
                        break;
                    }
                }
                let word = s.get(i..end)?;
                if word.bytes().all(|b| b.is_ascii_digit()) {
                    Tok::Number(word.to_string())
                } else {
                    Tok::Name(word.to_string())
                }
            }
            _ => return None,
        };
        out.push(tok);
    }
    Some(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek2(&self) -> Option<&Tok> {
        self.toks.get(self.pos + 1)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn step(&mut self, axis: Axis) -> Option<Step> {
        let (axis, test) = match self.next()? {
            Tok::Dot if axis == Axis::Child => (Axis::SelfNode, None),
            Tok::DotDot if axis == Axis::Child => (Axis::Parent, None),
            // `//.` and `//..` as the reference reads them: every node, resp. its parent.
            Tok::Dot => (Axis::DescendantOrSelf, None),
            Tok::DotDot => return None,
            Tok::Star => (axis, None),
            Tok::Name(n) => (axis, Some(n)),
            Tok::Number(n) => (axis, Some(n)),
            _ => return None,
        };
        let mut preds = Vec::new();
        while self.eat(&Tok::LBracket) {
            preds.push(self.or(0)?);
            if !self.eat(&Tok::RBracket) {
                return None;
            }
        }
        Some(Step { axis, test, preds })
    }

    fn or(&mut self, depth: usize) -> Option<Pred> {
        let mut left = self.and(depth)?;
        while self.peek() == Some(&Tok::Name("or".into())) {
            self.pos += 1;
            let right = self.and(depth)?;
            left = Pred::Or(Box::new(left), Box::new(right));
        }
        Some(left)
    }

    fn and(&mut self, depth: usize) -> Option<Pred> {
        let mut left = self.unary(depth)?;
        while self.peek() == Some(&Tok::Name("and".into())) {
            self.pos += 1;
            let right = self.unary(depth)?;
            left = Pred::And(Box::new(left), Box::new(right));
        }
        Some(left)
    }

    fn unary(&mut self, depth: usize) -> Option<Pred> {
        if depth > MAX_NESTING {
            return None;
        }
        match self.next()? {
            Tok::Number(n) => n.parse().ok().map(Pred::Position),
            Tok::LParen => {
                let p = self.or(depth + 1)?;
                self.eat(&Tok::RParen).then_some(p)
            }
            Tok::Name(n) if n == "not" && self.peek() == Some(&Tok::LParen) => {
                self.pos += 1;
                let p = self.or(depth + 1)?;
                self.eat(&Tok::RParen).then(|| Pred::Not(Box::new(p)))
            }
            Tok::Name(n)
                if n == "last"
                    && self.peek() == Some(&Tok::LParen)
                    && self.peek2() == Some(&Tok::RParen) =>
            {
                self.pos += 2;
                Some(Pred::Last)
            }
            Tok::At => {
                let field = match self.next()? {
                    Tok::Name(n) => n,
                    _ => return None,
                };
                if !self.eat(&Tok::Eq) {
                    return None;
                }
                match self.next()? {
                    Tok::Str(v) => Some(Pred::FieldIs(field, v)),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

impl Query {
    /// Parses a query. Errors carry the whole query (`Bad expr: //[`).
    pub fn parse(s: &str) -> Result<Query, BadExpr> {
        let bad = || BadExpr(s.to_string());
        if s.len() > MAX_QUERY_BYTES {
            return Err(bad());
        }
        let toks = tokenize(s).ok_or_else(bad)?;
        let mut p = Parser { toks, pos: 0 };
        let mut steps = Vec::new();
        let mut axis = match p.peek() {
            None => return Err(bad()),
            Some(Tok::Slash) => {
                p.pos += 1;
                if p.peek().is_none() {
                    return Ok(Query { steps });
                }
                Axis::Child
            }
            Some(Tok::SlashSlash) => {
                p.pos += 1;
                Axis::DescendantOrSelf
            }
            Some(_) => Axis::Child,
        };
        loop {
            steps.push(p.step(axis).ok_or_else(bad)?);
            axis = match p.next() {
                None => break,
                Some(Tok::Slash) => Axis::Child,
                Some(Tok::SlashSlash) => Axis::DescendantOrSelf,
                Some(_) => return Err(bad()),
            };
        }
        Ok(Query { steps })
    }

    /// The matching nodes, in document order, each once.
    pub fn eval(&self, doc: &dyn Doc) -> Vec<usize> {
        if doc.node_count() == 0 {
            return Vec::new();
        }
        let mut set = vec![0usize];
        for step in &self.steps {
            let mut next: Vec<usize> = Vec::new();
            for &n in &set {
                match step.axis {
                    Axis::Child => {
                        let end = doc.subtree_end(n);
                        let mut c = n + 1;
                        while c < end {
                            next.push(c);
                            c = doc.subtree_end(c).max(c + 1);
                        }
                    }
                    Axis::DescendantOrSelf => next.extend(n..doc.subtree_end(n).max(n + 1)),
                    Axis::SelfNode => next.push(n),
                    Axis::Parent => next.extend(doc.parent(n)),
                }
            }
            next.sort_unstable();
            next.dedup();
            if let Some(test) = &step.test {
                next.retain(|&n| doc.name_matches(n, test));
            }
            for pred in &step.preds {
                let len = next.len();
                next = next
                    .iter()
                    .enumerate()
                    .filter(|&(i, &n)| pred.holds(doc, n, i, len))
                    .map(|(_, &n)| n)
                    .collect();
            }
            set = next;
        }
        set
    }
}

impl Pred {
    fn holds(&self, doc: &dyn Doc, n: usize, pos: usize, len: usize) -> bool {
        match self {
            Pred::Position(p) => pos == *p,
            Pred::Last => pos + 1 == len,
            Pred::FieldIs(f, v) => doc.field_is(n, f, v),
            Pred::Not(p) => !p.holds(doc, n, pos, len),
            Pred::And(a, b) => a.holds(doc, n, pos, len) && b.holds(doc, n, pos, len),
            Pred::Or(a, b) => a.holds(doc, n, pos, len) || b.holds(doc, n, pos, len),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test tree, in document order: (name, kind, parent, subtree_end, title).
    ///
    /// ```text
    /// 0 ""        Site    /
    /// 1 example   Page    /example
    /// 2 news      Folder  /news
    /// 3 article-1 Page    /news/article-1
    /// 4 archive   Folder  /news/archive
    /// 5 old       Page    /news/archive/old
    /// 6 article-2 Page    /news/article-2
    /// 7 about     Page    /about
    /// ```
    struct T(
        Vec<(
            &'static str,
            &'static str,
            Option<usize>,
            usize,
            &'static str,
        )>,
    );

    fn tree() -> T {
        T(vec![
            ("", "Site", None, 8, "Root"),
            ("example", "Page", Some(0), 2, "Example"),
            ("news", "Folder", Some(0), 7, "News"),
            ("article-1", "Page", Some(2), 4, "First"),
            ("archive", "Folder", Some(2), 6, "Archive"),
            ("old", "Page", Some(4), 6, "Old"),
            ("article-2", "Page", Some(2), 7, "Second"),
            ("about", "Page", Some(0), 8, "About"),
        ])
    }

    impl Doc for T {
        fn node_count(&self) -> usize {
            self.0.len()
        }
        fn parent(&self, n: usize) -> Option<usize> {
            self.0[n].2
        }
        fn subtree_end(&self, n: usize) -> usize {
            self.0[n].3
        }
        fn name_matches(&self, n: usize, test: &str) -> bool {
            self.0[n].0 == test || self.0[n].1 == test
        }
        fn field_is(&self, n: usize, field: &str, value: &str) -> bool {
            match field {
                "name" => self.0[n].0 == value,
                "_kind" => self.0[n].1 == value,
                "title" => self.0[n].4 == value,
                _ => false,
            }
        }
    }

    fn q(s: &str) -> Result<Vec<usize>, String> {
        Query::parse(s)
            .map(|q| q.eval(&tree()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn forms() {
        let table: &[(&str, &[usize])] = &[
            ("/", &[0]),
            ("*", &[1, 2, 7]),
            ("/*", &[1, 2, 7]),
            ("example", &[1]),
            ("/example", &[1]),
            ("news/article-1", &[3]),
            ("/news/article-1", &[3]),
            ("/news/*", &[3, 4, 6]),
            ("/news/*/*", &[5]),
            ("/missing", &[]),
            ("/news/missing/x", &[]),
            // Descendant-or-self, from the root and from a step.
            ("//*", &[0, 1, 2, 3, 4, 5, 6, 7]),
            ("//Page", &[1, 3, 5, 6, 7]),
            ("//Folder", &[2, 4]),
            ("//Site", &[0]),
            ("/news//Page", &[3, 5, 6]),
            ("//news//Page", &[3, 5, 6]),
            ("//Folder//Page", &[3, 5, 6]),
            ("//old", &[5]),
            // Self and parent.
            (".", &[0]),
            ("..", &[]),
            ("/news/.", &[2]),
            ("/news/article-1/..", &[2]),
            ("//Page/..", &[0, 2, 4]),
            ("/news/archive/old/../..", &[2]),
            ("//.", &[0, 1, 2, 3, 4, 5, 6, 7]),
            // Name or kind test.
            ("/Page", &[1, 7]),
            ("/news/Folder", &[4]),
            // Positions, zero-based, over the whole step's set.
            ("//Page[0]", &[1]),
            ("//Page[1]", &[3]),
            ("//Page[4]", &[7]),
            ("//Page[5]", &[]),
            ("//Page[last()]", &[7]),
            ("/news/*[last()]", &[6]),
            ("*[0]", &[1]),
            // Field tests.
            ("//*[@name='old']", &[5]),
            ("//.[@name=\"old\"]", &[5]),
            ("//*[@title='News']", &[2]),
            ("//*[@_kind='Folder']", &[2, 4]),
            ("//*[@nope='x']", &[]),
            // Boolean forms.
            ("//*[@name='old' or @name='about']", &[5, 7]),
            ("//Page[@name='old' and @title='Old']", &[5]),
            ("//Page[@name='old' and @title='x']", &[]),
            ("//Page[not(@name='old')]", &[1, 3, 6, 7]),
            ("//*[not(@_kind='Page') and not(@_kind='Site')]", &[2, 4]),
            ("//Page[(@name='old' or @name='example') and not(0)]", &[5]),
            ("//Page[0 or last()]", &[1, 7]),
            // Chained predicates renumber.
            ("//Page[not(@name='example')][0]", &[3]),
            ("//*[@_kind='Page'][last()]", &[7]),
            // Whitespace between tokens.
            (" //Page [ @name = 'old' or  last() ] ", &[5, 7]),
        ];
        for (query, want) in table {
            assert_eq!(q(query), Ok(want.to_vec()), "{query}");
        }
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "   ",
            "//",
            "//[",
            "/a/",
            "/a//",
            "a b",
            "[0]",
            "/a[",
            "/a[]",
            "/a[0",
            "/a[@name]",
            "/a[@name=]",
            "/a[@name='x]",
            "/a[@='x']",
            "/a[name='x']",
            "/a[last]",
            "/a[last(]",
            "/a[not 0]",
            "/a[not(0]",
            "/a[0 and]",
            "/a[(0]",
            "/a]",
            "/a=b",
            "/a/@b",
            "//..",
            "/a!b",
            "/a|b",
            "/a[99999999999999999999999]",
        ] {
            assert_eq!(q(bad), Err(format!("Bad expr: {bad}")), "{bad:?}");
        }
        let deep = format!("/a[{}0{}]", "(".repeat(100), ")".repeat(100));
        assert!(q(&deep).is_err());
        let long = format!("/{}", "a".repeat(MAX_QUERY_BYTES));
        assert!(q(&long).is_err());
    }

    #[test]
    fn parse_shapes() {
        let p = Query::parse("/a//B[1][@x='y' or not(last())]").unwrap();
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].axis, Axis::Child);
        assert_eq!(p.steps[1].axis, Axis::DescendantOrSelf);
        assert_eq!(p.steps[1].test.as_deref(), Some("B"));
        assert_eq!(
            p.steps[1].preds,
            vec![
                Pred::Position(1),
                Pred::Or(
                    Box::new(Pred::FieldIs("x".into(), "y".into())),
                    Box::new(Pred::Not(Box::new(Pred::Last)))
                )
            ]
        );
        assert_eq!(Query::parse("/").unwrap().steps, vec![]);
        // Names may hold dots, dashes, digits and non-ASCII letters.
        assert!(Query::parse("/news-2010/a.b/caf\u{e9}/2010").is_ok());
    }
}
