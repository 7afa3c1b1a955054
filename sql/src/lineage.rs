//! Column lineage: which table columns each output column of a query is
//! computed from, and which column uses are opaque (transformations masking
//! cannot follow: HEX, CAST, arithmetic, SUBSTR, ..., or results stored
//! somewhere other than the client: `SELECT ... INTO`, `INSERT ... SELECT`).
//!
//! Masking uses it for computed columns (the server reports no original
//! column for `CONCAT(name, email)`) and for its strict mode. Same parser and
//! dialect as the statement facts ([`super::analyze`]).

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{
    visit_expressions, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectName,
    ObjectNamePart, Query, SelectItem, SetExpr, Statement, TableFactor,
};

/// A column a value comes from. `table` None: unqualified, in a statement
/// reading several tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceColumn {
    pub schema: Option<String>,
    pub table: Option<String>,
    pub column: String,
}

/// One statement's lineage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatementLineage {
    /// Per output column of the statement's result set: the columns it is
    /// computed from. None: no result set, or positions unknown (`*` before it).
    pub outputs: Option<Vec<Vec<SourceColumn>>>,
    /// Column uses masking cannot follow, with what does it.
    pub opaque: Vec<(SourceColumn, String)>,
    /// Every base table the statement names, `(schema, table)`.
    pub tables: Vec<(Option<String>, String)>,
}

/// Functions whose output contains their arguments' values as they are, so
/// content detectors and column rules still apply to the output.
const PASSTHROUGH: &[&str] = &[
    "CONCAT",
    "CONCAT_WS",
    "GROUP_CONCAT",
    "JSON_OBJECT",
    "JSON_ARRAY",
    "JSON_ARRAYAGG",
    "JSON_OBJECTAGG",
    "MIN",
    "MAX",
    "COALESCE",
    "IFNULL",
    "NULLIF",
    "IF",
    "LOWER",
    "UPPER",
    "LCASE",
    "UCASE",
    "TRIM",
    "LTRIM",
    "RTRIM",
    "ANY_VALUE",
    "FIRST_VALUE",
    "LAST_VALUE",
    "JSON_QUOTE",
    "JSON_EXTRACT",
    "JSON_VALUE",
    "JSON_UNQUOTE",
    "NVL",
];

/// Functions whose output carries nothing of the value.
const SINKS: &[&str] = &["COUNT", "ISNULL"];

#[derive(Debug, Clone)]
enum Source {
    Base(Option<String>, String),
    Derived(HashMap<String, Vec<SourceColumn>>),
}

#[derive(Default)]
struct Walker {
    /// Innermost scope last: (name or alias, what it is).
    scopes: Vec<Vec<(String, Source)>>,
    ctes: HashMap<String, HashMap<String, Vec<SourceColumn>>>,
    opaque: Vec<(SourceColumn, String)>,
    tables: Vec<(Option<String>, String)>,
}

fn object_parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.clone(),
            other => other.to_string(),
        })
        .collect()
}

impl Walker {
    fn resolve(&self, qualifier: Option<&str>, column: &str) -> Vec<SourceColumn> {
        let col = column.to_ascii_lowercase();
        for scope in self.scopes.iter().rev() {
            if let Some(q) = qualifier {
                for (name, source) in scope {
                    if name.eq_ignore_ascii_case(q) {
                        return match source {
                            Source::Base(schema, table) => vec![SourceColumn {
                                schema: schema.clone(),
                                table: Some(table.clone()),
                                column: column.to_string(),
                            }],
                            Source::Derived(map) => map.get(&col).cloned().unwrap_or_default(),
                        };
                    }
                }
            } else {
                for (_, source) in scope {
                    if let Source::Derived(map) = source {
                        if let Some(s) = map.get(&col) {
                            return s.clone();
                        }
                    }
                }
                let bases: Vec<_> = scope
                    .iter()
                    .filter_map(|(_, s)| match s {
                        Source::Base(schema, table) => Some((schema, table)),
                        _ => None,
                    })
                    .collect();
                if bases.len() == 1 {
                    return vec![SourceColumn {
                        schema: bases[0].0.clone(),
                        table: Some(bases[0].1.clone()),
                        column: column.to_string(),
                    }];
                }
                if !bases.is_empty() {
                    break;
                }
            }
        }
        vec![SourceColumn {
            schema: None,
            table: None,
            column: column.to_string(),
        }]
    }

    fn reference(
        &mut self,
        qualifier: Option<&str>,
        column: &str,
        opaque: Option<&str>,
        out: &mut Vec<SourceColumn>,
    ) {
        for s in self.resolve(qualifier, column) {
            if let Some(why) = opaque {
                self.opaque.push((s.clone(), why.to_string()));
            }
            out.push(s);
        }
    }

    /// Every column named anywhere inside `node`, all opaque for `why`.
    fn everything<V: sqlparser::ast::Visit>(
        &mut self,
        node: &V,
        why: &str,
        out: &mut Vec<SourceColumn>,
    ) {
        let mut names: Vec<(Option<String>, String)> = Vec::new();
        let _ = visit_expressions(node, |e| {
            match e {
                Expr::Identifier(i) => names.push((None, i.value.clone())),
                Expr::CompoundIdentifier(ids) if !ids.is_empty() => {
                    let q = (ids.len() >= 2).then(|| ids[ids.len() - 2].value.clone());
                    names.push((q, ids[ids.len() - 1].value.clone()));
                }
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        for (q, c) in names {
            self.reference(q.as_deref(), &c, Some(why), out);
        }
    }

    fn expr(&mut self, e: &Expr, opaque: Option<&str>, out: &mut Vec<SourceColumn>) {
        match e {
            Expr::Identifier(i) => self.reference(None, &i.value, opaque, out),
            Expr::CompoundIdentifier(ids) if !ids.is_empty() => {
                let q = (ids.len() >= 2).then(|| ids[ids.len() - 2].value.clone());
                self.reference(q.as_deref(), &ids[ids.len() - 1].value, opaque, out);
            }
            Expr::Nested(inner) => self.expr(inner, opaque, out),
            Expr::Value(_) => {}
            Expr::Function(f) => {
                let name = object_parts(&f.name)
                    .last()
                    .map(|s| s.to_ascii_uppercase())
                    .unwrap_or_default();
                if SINKS.contains(&name.as_str()) {
                    return;
                }
                let context = if PASSTHROUGH.contains(&name.as_str()) {
                    opaque.map(str::to_string)
                } else {
                    Some(opaque.map(str::to_string).unwrap_or(format!("{name}()")))
                };
                match &f.args {
                    FunctionArguments::List(list) => {
                        for a in &list.args {
                            let arg = match a {
                                FunctionArg::Unnamed(a)
                                | FunctionArg::Named { arg: a, .. }
                                | FunctionArg::ExprNamed { arg: a, .. } => a,
                            };
                            if let FunctionArgExpr::Expr(x) = arg {
                                self.expr(x, context.as_deref(), out);
                            }
                        }
                        if !list.clauses.is_empty() {
                            let why = context.unwrap_or(format!("{name}()"));
                            let mut ignored = Vec::new();
                            self.everything(&list.clauses, &why, &mut ignored);
                        }
                    }
                    FunctionArguments::Subquery(q) => {
                        let why = context.unwrap_or(format!("{name}()"));
                        self.everything(q.as_ref(), &why, out);
                    }
                    FunctionArguments::None => {}
                }
            }
            Expr::Cast { expr, .. } => {
                let why = opaque.unwrap_or("CAST()").to_string();
                self.expr(expr, Some(&why), out)
            }
            Expr::Subquery(q) => {
                let outputs = self.query(q);
                let sources: Vec<SourceColumn> = outputs
                    .and_then(|o| o.into_iter().next())
                    .unwrap_or_default();
                for s in sources {
                    if let Some(why) = opaque {
                        self.opaque.push((s.clone(), why.to_string()));
                    }
                    out.push(s);
                }
            }
            Expr::Case { .. } => self.everything(e, opaque.unwrap_or(""), out),
            other => {
                let why = opaque
                    .map(str::to_string)
                    .unwrap_or_else(|| expression_kind(other));
                self.everything(other, &why, out)
            }
        }
    }

    /// The lineage of a query's output columns; None when positions are unknown.
    fn query(&mut self, q: &Query) -> Option<Vec<Vec<SourceColumn>>> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let outputs = self.query(&cte.query);
                let names = output_names(&cte.query);
                let mut map = HashMap::new();
                if let (Some(outputs), Some(names)) = (outputs, names) {
                    for (n, o) in names.into_iter().zip(outputs) {
                        map.insert(n.to_ascii_lowercase(), o);
                    }
                }
                self.ctes
                    .insert(cte.alias.name.value.to_ascii_lowercase(), map);
            }
        }
        self.set_expr(&q.body)
    }

    fn set_expr(&mut self, body: &SetExpr) -> Option<Vec<Vec<SourceColumn>>> {
        match body {
            SetExpr::Select(select) => {
                let mut scope = Vec::new();
                for twj in &select.from {
                    let mut factors = vec![&twj.relation];
                    factors.extend(twj.joins.iter().map(|j| &j.relation));
                    for f in factors {
                        self.table_factor(f, &mut scope);
                    }
                }
                self.scopes.push(scope);
                let mut outputs = Some(Vec::new());
                for item in &select.projection {
                    match item {
                        SelectItem::UnnamedExpr(e)
                        | SelectItem::ExprWithAlias { expr: e, .. }
                        | SelectItem::ExprWithAliases { expr: e, .. } => {
                            let mut out = Vec::new();
                            self.expr(e, None, &mut out);
                            if let Some(o) = &mut outputs {
                                o.push(out);
                            }
                        }
                        _ => outputs = None,
                    }
                }
                if select.into.is_some() {
                    let all: Vec<SourceColumn> =
                        outputs.iter().flatten().flatten().cloned().collect();
                    for s in all {
                        self.opaque.push((s, "SELECT ... INTO".into()));
                    }
                }
                self.scopes.pop();
                outputs
            }
            SetExpr::Query(q) => self.query(q),
            SetExpr::SetOperation { left, right, .. } => {
                let l = self.set_expr(left);
                let r = self.set_expr(right);
                match (l, r) {
                    (Some(mut l), Some(r)) => {
                        for (a, b) in l.iter_mut().zip(r) {
                            a.extend(b);
                        }
                        Some(l)
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    fn table_factor(&mut self, f: &TableFactor, scope: &mut Vec<(String, Source)>) {
        match f {
            TableFactor::Table { name, alias, .. } => {
                let parts = object_parts(name);
                let table = parts.last().cloned().unwrap_or_default();
                let schema = (parts.len() >= 2).then(|| parts[parts.len() - 2].clone());
                let label = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or_else(|| table.clone());
                if schema.is_none() {
                    if let Some(map) = self.ctes.get(&table.to_ascii_lowercase()) {
                        scope.push((label, Source::Derived(map.clone())));
                        return;
                    }
                }
                self.tables.push((schema.clone(), table.clone()));
                scope.push((label, Source::Base(schema, table)));
            }
            TableFactor::Derived {
                subquery, alias, ..
            } => {
                let outputs = self.query(subquery);
                let names = output_names(subquery);
                let mut map = HashMap::new();
                if let (Some(outputs), Some(names)) = (outputs, names) {
                    for (n, o) in names.into_iter().zip(outputs) {
                        map.insert(n.to_ascii_lowercase(), o);
                    }
                }
                let label = alias
                    .as_ref()
                    .map(|a| a.name.value.clone())
                    .unwrap_or_default();
                scope.push((label, Source::Derived(map)));
            }
            TableFactor::NestedJoin {
                table_with_joins, ..
            } => {
                self.table_factor(&table_with_joins.relation, scope);
                for j in &table_with_joins.joins {
                    self.table_factor(&j.relation, scope);
                }
            }
            _ => {}
        }
    }
}

fn expression_kind(e: &Expr) -> String {
    match e {
        Expr::BinaryOp { op, .. } => format!("the operator {op}"),
        Expr::UnaryOp { op, .. } => format!("the operator {op}"),
        Expr::Substring { .. } => "SUBSTRING()".into(),
        Expr::Convert { .. } => "CONVERT()".into(),
        _ => "an expression".into(),
    }
}

/// The output column names of a query (alias, or the column's own name).
fn output_names(q: &Query) -> Option<Vec<String>> {
    let mut body = q.body.as_ref();
    loop {
        match body {
            SetExpr::Select(s) => {
                return s
                    .projection
                    .iter()
                    .map(|item| match item {
                        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
                        SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.clone()),
                        SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)) => {
                            ids.last().map(|i| i.value.clone())
                        }
                        SelectItem::UnnamedExpr(e) => Some(e.to_string()),
                        _ => None,
                    })
                    .collect()
            }
            SetExpr::SetOperation { left, .. } => body = left,
            SetExpr::Query(q) => body = q.body.as_ref(),
            _ => return None,
        }
    }
}

/// The lineage of each statement of a SQL text.
/// One parsed statement's lineage (the analysis computes it from the same
/// parse as its other facts: `Analysis::lineage`).
pub fn of_statement(s: &Statement) -> StatementLineage {
    statement(s)
}

fn statement(s: &Statement) -> StatementLineage {
    let mut w = Walker::default();
    let mut ignored = Vec::new();
    let outputs = match s {
        Statement::Query(q) => w.query(q),
        Statement::Insert(insert) => {
            if let Some(source) = &insert.source {
                let outputs = w.query(source);
                for s in outputs.into_iter().flatten().flatten() {
                    w.opaque.push((s, "INSERT ... SELECT".into()));
                }
            }
            None
        }
        Statement::CreateTable(_) => {
            w.everything(s, "CREATE TABLE ... SELECT", &mut ignored);
            None
        }
        Statement::CreateView(_) => {
            w.everything(s, "CREATE VIEW", &mut ignored);
            None
        }
        Statement::Update(_) => {
            w.everything(s, "UPDATE", &mut ignored);
            None
        }
        Statement::Set(_) => {
            w.everything(s, "SET", &mut ignored);
            None
        }
        _ => None,
    };
    StatementLineage {
        outputs,
        opaque: w.opaque,
        tables: w.tables,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lineage the analysis finds, from its one parse.
    fn lineage(sql: &str) -> Result<std::sync::Arc<Vec<StatementLineage>>, String> {
        crate::analyze(sql).lineage
    }

    fn cols(v: &[SourceColumn]) -> Vec<String> {
        v.iter()
            .map(|s| format!("{}.{}", s.table.clone().unwrap_or("?".into()), s.column))
            .collect()
    }

    #[test]
    fn outputs_follow_aliases_subqueries_ctes_and_unions() {
        let l =
            &lineage("SELECT CONCAT(c.name, ' ', c.email) AS x, id FROM customers c").unwrap()[0];
        let o = l.outputs.as_ref().unwrap();
        assert_eq!(cols(&o[0]), ["customers.name", "customers.email"]);
        assert_eq!(cols(&o[1]), ["customers.id"]);
        assert!(l.opaque.is_empty());

        let l = &lineage("WITH m AS (SELECT email AS e FROM customers) SELECT UPPER(e) FROM m")
            .unwrap()[0];
        assert_eq!(cols(&l.outputs.as_ref().unwrap()[0]), ["customers.email"]);

        let l = &lineage(
            "SELECT t.e FROM (SELECT email e FROM customers) t UNION SELECT name FROM staff",
        )
        .unwrap()[0];
        assert_eq!(
            cols(&l.outputs.as_ref().unwrap()[0]),
            ["customers.email", "staff.name"]
        );

        let l = &lineage("SELECT (SELECT MAX(email) FROM customers)").unwrap()[0];
        assert_eq!(cols(&l.outputs.as_ref().unwrap()[0]), ["customers.email"]);
    }

    #[test]
    fn opaque_uses() {
        let why = |sql: &str| -> Vec<String> {
            lineage(sql).unwrap()[0]
                .opaque
                .iter()
                .map(|(s, w)| format!("{}:{w}", s.column))
                .collect()
        };
        assert_eq!(why("SELECT HEX(email) FROM customers"), ["email:HEX()"]);
        assert_eq!(
            why("SELECT CONCAT(TO_BASE64(email)) FROM customers"),
            ["email:TO_BASE64()"]
        );
        assert_eq!(
            why("SELECT CAST(email AS BINARY) FROM customers"),
            ["email:CAST()"]
        );
        assert_eq!(why("SELECT id + 1 FROM customers"), ["id:the operator +"]);
        assert_eq!(
            why("SELECT SUBSTR(email, 2) FROM customers"),
            ["email:SUBSTRING()"]
        );
        assert_eq!(
            why("SELECT email INTO @v FROM customers LIMIT 1"),
            ["email:SELECT ... INTO"]
        );
        assert_eq!(
            why("INSERT INTO t2 SELECT email FROM customers"),
            ["email:INSERT ... SELECT"]
        );
        assert!(why("SELECT COUNT(email), email FROM customers").is_empty());
    }
}
