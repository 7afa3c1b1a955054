//! What one parsed statement does: its class, and the tables it reads and
//! writes, from the parser's syntax tree (sqlparser, MySQL dialect).
//!
//! Rules, so that the facts are predictable:
//! - A table is *written* when it is the target of INSERT / REPLACE / UPDATE /
//!   DELETE / LOAD DATA, or the object of DDL (CREATE, ALTER, DROP, TRUNCATE,
//!   RENAME, CREATE INDEX). A target position counts as a write only: the
//!   `t` of `UPDATE t SET ...` is written, not read.
//! - A table is *read* when it appears as a data source anywhere else: FROM and
//!   JOIN clauses, subqueries, CTE bodies, INSERT ... SELECT sources, the
//!   non-target tables of a multi-table UPDATE or DELETE, `CREATE TABLE ... LIKE`,
//!   DESCRIBE / SHOW COLUMNS / SHOW CREATE, and every table of a plain EXPLAIN.
//! - Names bound by a CTE (`WITH c AS ...`) are not tables; neither is `DUAL`.
//! - A multi-table UPDATE whose assigned columns are not all qualified
//!   (`SET x = 1`) counts every table of its join as written: which table owns
//!   `x` depends on the schema, which the gateway does not know, and a guardrail
//!   must not under-count writes.

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterTableOperation, AssignmentTarget, ContextModifier, Delete, FromTable, Insert,
    JoinOperator, ObjectName, ObjectType, Query, RenameTableNameKind, Set, SetExpr,
    ShowCreateObject, Statement, TableFactor, TableObject, TableWithJoins, Update, Visit, Visitor,
};

use super::features::{Features, StatementKind};
use super::{StatementClass, TableName};

/// The facts of one statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementFacts {
    pub class: StatementClass,
    pub tables_read: Vec<TableName>,
    pub tables_written: Vec<TableName>,
    /// Why the statement could not be parsed (then the class is `unparsed` and
    /// there are no tables).
    pub parse_error: Option<String>,
    /// What the statement is, by its leading keywords (see [`super::features`]),
    /// or by its syntax tree for `WITH ... UPDATE | DELETE | INSERT`.
    pub kind: StatementKind,
    /// What it does that guardrails treat specially (see [`super::features`]).
    pub features: Features,
    /// For `USE db`: the database it switches to.
    pub use_database: Option<String>,
}

impl StatementFacts {
    pub fn unparsed(error: String) -> Self {
        StatementFacts {
            class: StatementClass::Unparsed,
            tables_read: Vec::new(),
            tables_written: Vec::new(),
            parse_error: Some(error),
            kind: StatementKind::Other,
            features: Features::NONE,
            use_database: None,
        }
    }

    /// Adds the lexical facts of the statement's text: its kind and features,
    /// and the least class its leading keywords imply (the class of an
    /// unparsed statement stays `unparsed`; see [`StatementKind::class_floor`]).
    pub fn add_lexical(&mut self, lexical: super::features::LexicalFacts) {
        if self.kind == StatementKind::Other || self.parse_error.is_some() {
            self.kind = lexical.kind;
        }
        self.features |= lexical.features;
        self.use_database = lexical.use_database;
        if let (Some(floor), None) = (lexical.kind.class_floor(), &self.parse_error) {
            self.class = self.class.max(floor);
        }
    }

    /// The facts of a parsed statement.
    pub fn of(statement: &Statement) -> Self {
        let mut w = Walker::default();
        let class = w.statement(statement);
        dedup(&mut w.reads);
        dedup(&mut w.writes);
        let (kind, features) = cte_statement(statement);
        StatementFacts {
            class,
            tables_read: w.reads,
            tables_written: w.writes,
            parse_error: None,
            kind,
            features,
            use_database: None,
        }
    }
}

/// `WITH ... UPDATE | DELETE | INSERT`: the kind of the statement after the
/// CTEs (its leading keyword is `WITH`), and whether an UPDATE or DELETE has no
/// WHERE. `Other` for any other statement (its kind is lexical).
fn cte_statement(statement: &Statement) -> (StatementKind, Features) {
    let Statement::Query(q) = statement else {
        return (StatementKind::Other, Features::NONE);
    };
    let without_where = |none: bool| {
        if none {
            Features::WITHOUT_WHERE
        } else {
            Features::NONE
        }
    };
    match &*q.body {
        SetExpr::Update(inner) | SetExpr::Delete(inner) | SetExpr::Insert(inner) => match inner {
            Statement::Update(u) => (StatementKind::Update, without_where(u.selection.is_none())),
            Statement::Delete(d) => (StatementKind::Delete, without_where(d.selection.is_none())),
            Statement::Insert(i) if i.replace_into => (StatementKind::Replace, Features::NONE),
            Statement::Insert(_) => (StatementKind::Insert, Features::NONE),
            _ => (StatementKind::Other, Features::NONE),
        },
        _ => (StatementKind::Other, Features::NONE),
    }
}

fn dedup(tables: &mut Vec<TableName>) {
    let mut seen = Vec::with_capacity(tables.len());
    tables.retain(|t| {
        if seen.contains(t) {
            false
        } else {
            seen.push(t.clone());
            true
        }
    });
}

/// A table named in a join list, with the name its columns are qualified by.
struct Factor<'a> {
    name: &'a ObjectName,
    /// The alias if there is one, else the table's own name.
    reference: String,
}

#[derive(Default)]
struct Walker {
    /// CTE names in scope, innermost last; `scopes` marks where each query's start.
    ctes: Vec<String>,
    scopes: Vec<usize>,
    reads: Vec<TableName>,
    writes: Vec<TableName>,
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        self.enter(query);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _query: &Query) -> ControlFlow<()> {
        self.leave();
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, .. } = factor {
            if let Some(t) = self.table(name) {
                self.reads.push(t);
            }
        }
        ControlFlow::Continue(())
    }
}

impl Walker {
    fn enter(&mut self, query: &Query) {
        self.scopes.push(self.ctes.len());
        if let Some(with) = &query.with {
            self.ctes
                .extend(with.cte_tables.iter().map(|c| c.alias.name.value.clone()));
        }
    }

    fn leave(&mut self) {
        if let Some(mark) = self.scopes.pop() {
            self.ctes.truncate(mark);
        }
    }

    /// The table an object name refers to; None for CTE names and `DUAL`.
    fn table(&self, name: &ObjectName) -> Option<TableName> {
        let parts: Vec<&str> = name
            .0
            .iter()
            .filter_map(|p| p.as_ident().map(|i| i.value.as_str()))
            .collect();
        match parts.as_slice() {
            [] => None,
            [t] if t.eq_ignore_ascii_case("dual") => None,
            [t] if self.ctes.iter().any(|c| c == t) => None,
            [t] => Some(TableName {
                schema: None,
                name: (*t).to_string(),
            }),
            [.., s, t] => Some(TableName {
                schema: Some((*s).to_string()),
                name: (*t).to_string(),
            }),
        }
    }

    fn read(&mut self, name: &ObjectName) {
        self.reads.extend(self.table(name));
    }

    fn write(&mut self, name: &ObjectName) {
        self.writes.extend(self.table(name));
    }

    /// Reads every table in a syntax subtree (subqueries included).
    fn visit<V: Visit>(&mut self, node: &V) {
        let _ = node.visit(self);
    }

    fn statement(&mut self, statement: &Statement) -> StatementClass {
        use StatementClass::*;
        match statement {
            Statement::Query(q) => self.query_statement(q),
            Statement::Insert(insert) => {
                self.insert(insert);
                Write
            }
            Statement::Update(update) => {
                self.update(update);
                Write
            }
            Statement::Delete(delete) => {
                self.delete(delete);
                Write
            }
            Statement::Merge(_) => {
                self.visit(statement);
                Write
            }
            Statement::LoadData { table_name, .. } => {
                self.write(table_name);
                Write
            }

            Statement::CreateTable(ct) => {
                self.write(&ct.name);
                if let Some(q) = &ct.query {
                    self.visit(q);
                }
                if let Some(like) = &ct.like {
                    let (sqlparser::ast::CreateTableLikeKind::Parenthesized(l)
                    | sqlparser::ast::CreateTableLikeKind::Plain(l)) = like;
                    self.read(&l.name);
                }
                if let Some(clone) = &ct.clone {
                    self.read(clone);
                }
                Ddl
            }
            Statement::CreateView(cv) => {
                self.write(&cv.name);
                self.visit(&cv.query);
                Ddl
            }
            Statement::AlterView { name, query, .. } => {
                self.write(name);
                self.visit(query);
                Ddl
            }
            Statement::CreateIndex(ci) => {
                self.write(&ci.table_name);
                Ddl
            }
            Statement::AlterTable(at) => {
                self.write(&at.name);
                for op in &at.operations {
                    if let AlterTableOperation::RenameTable { table_name } = op {
                        let (RenameTableNameKind::As(n) | RenameTableNameKind::To(n)) = table_name;
                        self.write(n);
                    }
                }
                Ddl
            }
            Statement::Drop {
                object_type,
                names,
                table,
                ..
            } => match object_type {
                ObjectType::Table | ObjectType::View | ObjectType::MaterializedView => {
                    names.iter().for_each(|n| self.write(n));
                    Ddl
                }
                ObjectType::Index => {
                    if let Some(t) = table {
                        self.write(t);
                    }
                    Ddl
                }
                ObjectType::User | ObjectType::Role => Admin,
                _ => Ddl,
            },
            Statement::Truncate(t) => {
                t.table_names.iter().for_each(|n| self.write(&n.name));
                Ddl
            }
            Statement::RenameTable(renames) => {
                for r in renames {
                    self.write(&r.old_name);
                    self.write(&r.new_name);
                }
                Ddl
            }
            Statement::CreateDatabase { .. }
            | Statement::CreateSchema { .. }
            | Statement::AlterSchema(_)
            | Statement::CreateFunction(_)
            | Statement::CreateProcedure { .. }
            | Statement::CreateTrigger(_)
            | Statement::DropTrigger(_)
            | Statement::DropFunction(_)
            | Statement::DropProcedure { .. }
            | Statement::CreateSequence { .. }
            | Statement::CreateType { .. }
            | Statement::Comment { .. } => Ddl,

            Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::Deny(_)
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
            | Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::Kill { .. }
            | Statement::Flush { .. }
            | Statement::Install { .. }
            | Statement::CreateServer(_) => Admin,
            Statement::OptimizeTable { name, .. } => {
                self.read(name);
                Admin
            }
            Statement::Analyze(a) => {
                if let Some(t) = &a.table_name {
                    self.read(t);
                }
                Admin
            }

            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
            | Statement::UnlockTables => Transaction,
            Statement::LockTables { tables } => {
                for t in tables {
                    self.read(&ObjectName::from(vec![t.table.clone()]));
                }
                Transaction
            }

            Statement::Set(set) => self.set(set),
            Statement::Use(_) | Statement::Prepare { .. } | Statement::Deallocate { .. } => Session,

            Statement::ExplainTable { table_name, .. } => {
                self.read(table_name);
                Read
            }
            Statement::ShowCreate { obj_type, obj_name } => {
                if matches!(obj_type, ShowCreateObject::Table | ShowCreateObject::View) {
                    self.read(obj_name);
                }
                Read
            }
            Statement::ShowColumns { show_options, .. } => {
                if let Some(name) = show_options
                    .show_in
                    .as_ref()
                    .and_then(|s| s.parent_name.as_ref())
                {
                    self.read(name);
                }
                Read
            }
            Statement::ShowFunctions { .. }
            | Statement::ShowVariable { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowCatalogs { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowProcessList { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowCharset(_)
            | Statement::ShowObjects(_)
            | Statement::ShowTables { .. }
            | Statement::ShowViews { .. }
            | Statement::ShowCollation { .. } => Read,
            Statement::Explain {
                analyze, statement, ..
            } => {
                let class = self.statement(statement);
                if *analyze {
                    // EXPLAIN ANALYZE runs the statement.
                    class
                } else {
                    // A plan reads the metadata of every table involved; nothing is written.
                    let written = std::mem::take(&mut self.writes);
                    self.reads.extend(written);
                    Read
                }
            }

            // CALL and EXECUTE run code the gateway cannot see here.
            _ => Other,
        }
    }

    fn query_statement(&mut self, query: &Query) -> StatementClass {
        match &*query.body {
            SetExpr::Insert(inner)
            | SetExpr::Update(inner)
            | SetExpr::Delete(inner)
            | SetExpr::Merge(inner) => {
                // `WITH ... UPDATE ...`: the CTEs are in scope for the statement.
                self.enter(query);
                if let Some(with) = &query.with {
                    for cte in &with.cte_tables {
                        self.visit(&cte.query);
                    }
                }
                let class = self.statement(inner);
                self.leave();
                class
            }
            _ => {
                self.visit(query);
                StatementClass::Read
            }
        }
    }

    fn insert(&mut self, insert: &Insert) {
        if let TableObject::TableName(name) = &insert.table {
            self.write(name);
        }
        if let Some(source) = &insert.source {
            self.visit(source);
        }
        self.visit(&insert.assignments);
        if let Some(on) = &insert.on {
            self.visit(on);
        }
    }

    fn update(&mut self, update: &Update) {
        let mut found = Factors::default();
        collect_factors(&update.table, &mut found);
        let factors = &found.tables;
        // The qualifiers of the assigned columns say which tables are written.
        let mut qualifiers = Vec::new();
        let mut unqualified = false;
        for a in &update.assignments {
            let names: Vec<&ObjectName> = match &a.target {
                AssignmentTarget::ColumnName(n) => vec![n],
                AssignmentTarget::Tuple(ns) => ns.iter().collect(),
            };
            for n in names {
                match n.0.len() {
                    0 | 1 => unqualified = true,
                    len => match n.0[len - 2].as_ident() {
                        Some(q) => qualifiers.push(q.value.clone()),
                        None => unqualified = true,
                    },
                }
            }
        }
        let all_written = factors.len() == 1
            || unqualified
            || qualifiers
                .iter()
                .any(|q| !factors.iter().any(|f| &f.reference == q));
        for f in factors {
            if all_written || qualifiers.contains(&f.reference) {
                self.write(f.name);
            } else {
                self.read(f.name);
            }
        }
        for other in &found.others {
            self.visit(*other);
        }
        for op in &found.joins {
            self.visit(*op);
        }
        if let Some(from) = &update.from {
            self.visit(from);
        }
        for a in &update.assignments {
            self.visit(&a.value);
        }
        self.visit(&update.selection);
        self.visit(&update.order_by);
        self.visit(&update.limit);
    }

    fn delete(&mut self, delete: &Delete) {
        let lists: &[TableWithJoins] = match &delete.from {
            FromTable::WithFromKeyword(l) | FromTable::WithoutKeyword(l) => l,
        };
        let using: &[TableWithJoins] = delete.using.as_deref().unwrap_or(&[]);
        let mut from = Factors::default();
        let mut using_found = Factors::default();
        for twj in lists {
            collect_factors(twj, &mut from);
        }
        for twj in using {
            collect_factors(twj, &mut using_found);
        }
        let from_factors = &from.tables;
        let using_factors = &using_found.tables;
        // Targets: the names before FROM (`DELETE t1, t2 FROM ...`), else the FROM
        // list itself (`DELETE FROM t ...`, `DELETE FROM t1, t2 USING ...`).
        let targets: Vec<String> = if delete.tables.is_empty() {
            from_factors.iter().map(|f| f.reference.clone()).collect()
        } else {
            delete
                .tables
                .iter()
                .filter_map(|n| n.0.last().and_then(|p| p.as_ident()))
                .map(|i| i.value.clone())
                .collect()
        };
        for name in &delete.tables {
            let last = name.0.last().and_then(|p| p.as_ident()).map(|i| &i.value);
            let known = [from_factors, using_factors]
                .iter()
                .any(|fs| fs.iter().any(|f| Some(&f.reference) == last));
            if !known {
                // A target that is in no join list: written all the same.
                self.write(name);
            }
        }
        for f in from_factors.iter().chain(using_factors) {
            if targets.contains(&f.reference) {
                self.write(f.name);
            } else {
                self.read(f.name);
            }
        }
        for other in from.others.iter().chain(&using_found.others) {
            self.visit(*other);
        }
        for op in from.joins.iter().chain(&using_found.joins) {
            self.visit(*op);
        }
        self.visit(&delete.selection);
        self.visit(&delete.order_by);
        self.visit(&delete.limit);
    }

    fn set(&mut self, set: &Set) -> StatementClass {
        let global = |scope: &Option<ContextModifier>, name: &ObjectName| {
            matches!(scope, Some(ContextModifier::Global))
                || name.0.first().and_then(|p| p.as_ident()).is_some_and(|i| {
                    let v = i.value.to_ascii_lowercase();
                    let v = v.split('.').next().unwrap_or_default();
                    matches!(v, "@@global" | "@@persist" | "@@persist_only")
                })
        };
        match set {
            Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            } => {
                self.visit(values);
                if global(scope, variable) {
                    StatementClass::Admin
                } else {
                    StatementClass::Session
                }
            }
            Set::MultipleAssignments { assignments } => {
                let mut class = StatementClass::Session;
                for a in assignments {
                    self.visit(&a.value);
                    if global(&a.scope, &a.name) {
                        class = StatementClass::Admin;
                    }
                }
                class
            }
            Set::ParenthesizedAssignments { values, .. } => {
                self.visit(values);
                StatementClass::Session
            }
            Set::SetTransaction { .. } => StatementClass::Transaction,
            _ => StatementClass::Session,
        }
    }
}

/// What a join list holds.
#[derive(Default)]
struct Factors<'a> {
    tables: Vec<Factor<'a>>,
    /// Derived tables, table functions: visited for reads.
    others: Vec<&'a TableFactor>,
    /// Join conditions (they may hold subqueries).
    joins: Vec<&'a JoinOperator>,
}

/// The plain tables of a join list (with their reference names), and the other
/// factors (derived tables, table functions) to be visited for reads.
fn collect_factors<'a>(twj: &'a TableWithJoins, found: &mut Factors<'a>) {
    let mut one = |f: &'a TableFactor| match f {
        TableFactor::Table { name, alias, .. } => {
            let reference = match alias {
                Some(a) => a.name.value.clone(),
                None => name
                    .0
                    .last()
                    .and_then(|p| p.as_ident())
                    .map(|i| i.value.clone())
                    .unwrap_or_default(),
            };
            found.tables.push(Factor { name, reference });
        }
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => collect_factors(table_with_joins, found),
        other => found.others.push(other),
    };
    one(&twj.relation);
    for j in &twj.joins {
        one(&j.relation);
    }
    found
        .joins
        .extend(twj.joins.iter().map(|j| &j.join_operator));
}
