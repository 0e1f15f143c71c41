//! Raw SQL that PostgreSQL plans once per connection. diesel's `sql_query` marks every statement
//! unsafe to cache, so the server parses, rewrites and plans it on every call; on a hot path of
//! short statements that doubles the server's work (bench: pgbench's create transaction costs
//! 264 µs of PostgreSQL CPU prepared, 484 µs unprepared). A [`Statement`] is the same text with
//! typed binds, cached by diesel-async under its text like the query builder's own statements.
//!
//! Only for fixed text: a statement whose text changes per call (values spliced in) would fill
//! the cache. The text is written with `$1`, `$2`, … in order of the binds, each used once.

use diesel::QueryResult;
use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::serialize::ToSql;
use diesel::sql_types::{HasSqlType, Untyped};

/// One bind: the value and its SQL type.
trait Bind: Send + Sync {
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()>;
}

struct Typed<ST, T> {
    value: T,
    _type: std::marker::PhantomData<fn() -> ST>,
}

impl<ST, T> Bind for Typed<ST, T>
where
    Pg: HasSqlType<ST>,
    T: ToSql<ST, Pg> + Send + Sync,
{
    fn push<'b>(&'b self, out: &mut AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.push_bind_param::<ST, T>(&self.value)
    }
}

/// A raw statement with its binds; run it with diesel-async's `RunQueryDsl` (`execute`, `load`,
/// `get_result`) and read rows with `QueryableByName`, as with `sql_query`.
#[must_use = "a statement does nothing until it is run"]
pub struct Statement<'a> {
    /// The text between the placeholders: one more piece than placeholders.
    pieces: Vec<String>,
    /// Whether the placeholders are `$1`, `$2`, … in order.
    in_order: bool,
    binds: Vec<Box<dyn Bind + 'a>>,
}

/// `sql` with `$1`, `$2`, … for the binds that follow (see the module docs).
pub fn statement<'a>(sql: &str) -> Statement<'a> {
    let (pieces, numbers) = split(sql);
    Statement {
        pieces,
        in_order: numbers.iter().enumerate().all(|(i, n)| *n == i + 1),
        binds: Vec::new(),
    }
}

/// The text around each `$n` placeholder, and each placeholder's number. A `$` without digits
/// (a dollar-quoted string's delimiter) is text.
fn split(sql: &str) -> (Vec<String>, Vec<usize>) {
    let (mut pieces, mut numbers, mut current) = (Vec::new(), Vec::new(), String::new());
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        let digits = rest[at + 1..].bytes().take_while(u8::is_ascii_digit).count();
        current.push_str(&rest[..at]);
        if digits == 0 {
            current.push('$');
        } else {
            pieces.push(std::mem::take(&mut current));
            numbers.push(rest[at + 1..at + 1 + digits].parse().unwrap_or(0));
        }
        rest = &rest[at + 1 + digits..];
    }
    current.push_str(rest);
    pieces.push(current);
    (pieces, numbers)
}

impl<'a> Statement<'a> {
    /// Binds `value` as SQL type `ST` to the next placeholder.
    pub fn bind<ST, T>(mut self, value: T) -> Self
    where
        Pg: HasSqlType<ST>,
        T: ToSql<ST, Pg> + Send + Sync + 'a,
        ST: 'a,
    {
        self.binds.push(Box::new(Typed::<ST, T> {
            value,
            _type: std::marker::PhantomData,
        }));
        self
    }
}

impl QueryFragment<Pg> for Statement<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        if !self.in_order || self.pieces.len() != self.binds.len() + 1 {
            return Err(diesel::result::Error::QueryBuilderError(
                format!(
                    "a statement needs $1..${} in order, one per bind, and got {} binds",
                    self.pieces.len() - 1,
                    self.binds.len()
                )
                .into(),
            ));
        }
        for (piece, bind) in self.pieces.iter().zip(&self.binds) {
            out.push_sql(piece);
            bind.push(&mut out)?;
        }
        if let Some(last) = self.pieces.last() {
            out.push_sql(last);
        }
        Ok(())
    }
}

impl QueryId for Statement<'_> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl Query for Statement<'_> {
    type SqlType = Untyped;
}

#[cfg(test)]
mod tests {
    use diesel::pg::PgQueryBuilder;
    use diesel::query_builder::QueryBuilder as _;
    use diesel::sql_types::{BigInt, Text};

    use super::*;

    fn sql_of(statement: &Statement<'_>) -> QueryResult<String> {
        let mut builder = PgQueryBuilder::default();
        statement.to_sql(&mut builder, &Pg)?;
        Ok(builder.finish())
    }

    #[test]
    fn the_text_comes_back_with_the_backend_s_placeholders() {
        let s = statement("SELECT $1::text || $$x$$, $2 WHERE a = $3")
            .bind::<Text, _>("a".to_owned())
            .bind::<BigInt, _>(2_i64)
            .bind::<Text, _>("c".to_owned());
        assert_eq!(sql_of(&s).expect("sql"), "SELECT $1::text || $$x$$, $2 WHERE a = $3");
        assert_eq!(split("no binds").0, ["no binds"]);
        assert_eq!(split("$10 and $2").1, [10, 2]);
    }

    #[test]
    fn a_bind_too_many_or_too_few_or_out_of_order_is_an_error_not_a_wrong_query() {
        let few = statement("SELECT $1, $2").bind::<BigInt, _>(1_i64);
        assert!(sql_of(&few).is_err());
        let many = statement("SELECT $1").bind::<BigInt, _>(1_i64).bind::<BigInt, _>(2_i64);
        assert!(sql_of(&many).is_err());
        let swapped = statement("SELECT $2, $1")
            .bind::<BigInt, _>(1_i64)
            .bind::<BigInt, _>(2_i64);
        assert!(sql_of(&swapped).is_err());
    }

    #[test]
    fn diesel_may_cache_it_where_it_would_not_cache_sql_query() {
        // What diesel-async asks before caching a statement under its text.
        let ours = statement("SELECT $1").bind::<BigInt, _>(1_i64);
        assert!(QueryFragment::<Pg>::is_safe_to_cache_prepared(&ours, &Pg).expect("walk"));
        let theirs = diesel::sql_query("SELECT $1").bind::<BigInt, _>(1_i64);
        assert!(!QueryFragment::<Pg>::is_safe_to_cache_prepared(&theirs, &Pg).expect("walk"));
    }
}
