//! Lists as RabbitMQ's API gives them: sorted (`sort`, `sort_reverse`; by vhost and name
//! unless asked), paged (`page`, `page_size`, filtered by `name`, a regex with
//! `use_regex`), and cut to the `columns` asked for. Only the page's items are rendered
//! as JSON, unless the sort key needs them all. The same query carries the sample ranges
//! a detail may ask for (`lengths_age`, `msg_rates_incr`, ...).

use std::cmp::Ordering;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::rates::{Range, Ranges, RANGE_SAMPLES_MAX};

/// RabbitMQ's limit on `page_size`.
const MAX_PAGE_SIZE: usize = 500;
const DEFAULT_PAGE_SIZE: usize = 100;

/// The query parameters of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub columns: Vec<String>,
    pub sort: Option<String>,
    pub sort_reverse: bool,
    pub page: Option<usize>,
    pub page_size: usize,
    pub name: Option<String>,
    pub use_regex: bool,
    /// `disable_stats=true`: leave out statistics (message_stats and rates).
    pub disable_stats: bool,
    pub enable_queue_totals: bool,
    /// The samples asked for; read through [`ListQuery::ranges`].
    ranges: Ranges,
    /// Why the range parameters are refused (checked only where RabbitMQ reads them).
    range_refusal: Option<String>,
    /// The query string as given: what other cluster nodes render their part of a list
    /// for.
    pub raw: Option<String>,
}

/// RabbitMQ's prefixes of range parameters, in the order it checks them. `node_stats`
/// is checked too (a bad one is refused as RabbitMQ refuses it); Wharf keeps no node
/// history.
const RANGE_PREFIXES: [&str; 4] = ["lengths", "msg_rates", "data_rates", "node_stats"];

/// An integer as Erlang's `list_to_integer` reads one (an optional sign, then digits);
/// None for anything else, which RabbitMQ ignores. Beyond i128 it saturates.
fn erlang_integer(text: &str) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<i128>().unwrap_or(i128::MAX);
    Some(if negative { -magnitude } else { magnitude })
}

/// One prefix's range: None unless both `_age` and `_incr` are integers; refused unless
/// both are positive and ask at most [`RANGE_SAMPLES_MAX`] increments.
fn range(age: Option<&str>, incr: Option<&str>) -> Result<Option<Range>, String> {
    let (Some(age), Some(incr)) = (age.and_then(erlang_integer), incr.and_then(erlang_integer))
    else {
        return Ok(None);
    };
    if age > 0 && incr > 0 && age / incr <= i128::from(RANGE_SAMPLES_MAX) {
        let seconds = |v: i128| u64::try_from(v).unwrap_or(u64::MAX);
        return Ok(Some(Range {
            age_s: seconds(age),
            incr_s: seconds(incr),
        }));
    }
    Err(format!("Invalid range parameters: age {age}, incr {incr}"))
}

fn flag(value: &str) -> bool {
    value == "true"
}

impl ListQuery {
    pub fn parse(query: Option<&str>) -> Result<ListQuery, ApiError> {
        let mut list = ListQuery {
            page_size: DEFAULT_PAGE_SIZE,
            raw: query.map(str::to_string),
            ..ListQuery::default()
        };
        let pairs = query.map(|q| form_pairs(q.as_bytes())).unwrap_or_default();
        let (mut page, mut page_size) = (None, None);
        list.read_ranges(&pairs);
        for (key, value) in pairs {
            match key.as_str() {
                "columns" => {
                    list.columns = value
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                "sort" if !value.is_empty() => list.sort = Some(value),
                "sort_reverse" => list.sort_reverse = flag(&value),
                "page" => page = Some(value),
                "page_size" => page_size = Some(value),
                "name" if !value.is_empty() => list.name = Some(value),
                "use_regex" => list.use_regex = flag(&value),
                "disable_stats" => list.disable_stats = flag(&value),
                "enable_queue_totals" => list.enable_queue_totals = flag(&value),
                _ => {}
            }
        }
        if let Some(page) = page {
            list.paging(&page, page_size.as_deref())?;
        }
        Ok(list)
    }

    /// The range parameters, as RabbitMQ reads them: the first of each name counts.
    fn read_ranges(&mut self, pairs: &[(String, String)]) {
        let first = |name: String| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| value.as_str())
        };
        let mut read = [None; RANGE_PREFIXES.len()];
        for (prefix, range_read) in RANGE_PREFIXES.iter().zip(&mut read) {
            let asked = range(
                first(format!("{prefix}_age")),
                first(format!("{prefix}_incr")),
            );
            match asked {
                Ok(asked) => *range_read = asked,
                Err(refusal) => {
                    self.range_refusal = Some(refusal);
                    return;
                }
            }
        }
        let [lengths, msg_rates, data_rates, _node_stats] = read;
        self.ranges = Ranges {
            lengths,
            msg_rates,
            data_rates,
        };
    }

    /// The sample ranges asked for; bad ones are refused (400 `bad_request`, as
    /// RabbitMQ's details, overview, connections and channels refuse them).
    pub fn ranges(&self) -> Result<Ranges, ApiError> {
        match &self.range_refusal {
            None => Ok(self.ranges),
            Some(refusal) => Err(ApiError::bad_request(refusal.clone())),
        }
    }

    /// Checks the sample ranges as RabbitMQ's lists of queues, exchanges and vhosts do
    /// (400 `invalid_range_parameters`). Lists show no samples: see docs/management.md.
    pub fn check_list_ranges(&self) -> Result<(), ApiError> {
        match &self.range_refusal {
            None => Ok(()),
            Some(refusal) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_range_parameters",
                refusal.clone(),
            )),
        }
    }

    /// Checks the paging parameters (only read when `page` is given) as RabbitMQ does.
    fn paging(&mut self, page: &str, size: Option<&str>) -> Result<(), ApiError> {
        let invalid = || ApiError::bad_request("Pagination parameters are invalid");
        let page: i64 = page.parse().map_err(|_| invalid())?;
        let size: Option<i64> = match size {
            Some(size) => Some(size.parse().map_err(|_| invalid())?),
            None => None,
        };
        let size_ok = size.is_none_or(|s| (1..=MAX_PAGE_SIZE as i64).contains(&s));
        if page < 1 || !size_ok {
            let size = size.map_or("undefined".to_string(), |s| s.to_string());
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_pagination_parameters",
                format!("Invalid pagination parameters: page number {page}, page size {size}"),
            ));
        }
        self.page = Some(page as usize);
        self.page_size = size.map_or(DEFAULT_PAGE_SIZE, |s| s as usize);
        Ok(())
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ListQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        ListQuery::parse(parts.uri.query())
    }
}

/// `application/x-www-form-urlencoded` pairs, percent and `+` decoded (a pair that does
/// not decode is left out).
pub fn form_pairs(query: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(query)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// How one kind of object is listed: its vhost and name (the default order and what
/// `name` filters on) and its JSON.
pub trait Listed {
    fn vhost(&self) -> &str;
    fn name(&self) -> &str;
    fn render(&self, query: &ListQuery) -> Value;
}

/// The value at a dotted path (`message_stats.publish_details.rate`).
fn at_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

/// RabbitMQ's order for sort keys: missing first, then numbers, then texts.
fn compare(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn rank(v: Option<&Value>) -> u8 {
        match v {
            None | Some(Value::Null) => 0,
            Some(Value::Bool(_)) => 1,
            Some(Value::Number(_)) => 2,
            Some(Value::String(_)) => 3,
            Some(_) => 4,
        }
    }
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&y.as_f64().unwrap_or(0.0)),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

/// Keeps only the columns asked for (dotted paths keep that part of a nested object).
fn select_columns(value: Value, columns: &[String]) -> Value {
    if columns.is_empty() {
        return value;
    }
    let mut kept = Value::Object(Map::new());
    for column in columns {
        if let Some(found) = at_path(&value, column) {
            let mut target = &mut kept;
            let parts: Vec<&str> = column.split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let object = match target {
                    Value::Object(object) => object,
                    _ => break,
                };
                if i + 1 == parts.len() {
                    object.insert(part.to_string(), found.clone());
                    break;
                }
                target = object
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
        }
    }
    kept
}

/// Which names a list keeps.
type NameFilter = Box<dyn Fn(&str) -> bool>;

/// Whether `name` passes the query's name filter: a substring, or a regex, either
/// ignoring case as RabbitMQ's does.
fn name_filter(query: &ListQuery) -> Result<NameFilter, ApiError> {
    match (&query.name, query.use_regex) {
        (None, _) => Ok(Box::new(|_| true)),
        (Some(text), false) => {
            let text = text.to_lowercase();
            Ok(Box::new(move |name: &str| {
                name.to_lowercase().contains(text.as_str())
            }))
        }
        (Some(pattern), true) => match regex::RegexBuilder::new(pattern)
            .case_insensitive(true)
            .size_limit(1 << 20)
            .build()
        {
            Ok(regex) => Ok(Box::new(move |name: &str| regex.is_match(name))),
            Err(_) => Err(ApiError::bad_request("Pagination parameters are invalid")),
        },
    }
}

/// The list answer: an array, or with `page` the paged object RabbitMQ wraps it in.
pub fn respond<T: Listed>(mut items: Vec<T>, query: &ListQuery) -> Result<Value, ApiError> {
    let total = items.len();
    if query.page.is_some() {
        let keep = name_filter(query)?;
        items.retain(|item| keep(item.name()));
    }
    let filtered = items.len();
    let by_name = matches!(query.sort.as_deref(), None | Some("name") | Some("vhost"));
    let mut rendered: Vec<Value> = if by_name {
        items.sort_by(|a, b| match query.sort.as_deref() {
            Some("name") => a.name().cmp(b.name()),
            _ => (a.vhost(), a.name()).cmp(&(b.vhost(), b.name())),
        });
        if query.sort_reverse {
            items.reverse();
        }
        let page = page_range(query, filtered);
        items[page].iter().map(|item| item.render(query)).collect()
    } else {
        let key = query.sort.clone().unwrap_or_default();
        let mut all: Vec<Value> = items.iter().map(|item| item.render(query)).collect();
        all.sort_by(|a, b| compare(at_path(a, &key), at_path(b, &key)));
        if query.sort_reverse {
            all.reverse();
        }
        let page = page_range(query, filtered);
        all.drain(page).collect()
    };
    rendered = rendered
        .into_iter()
        .map(|v| select_columns(v, &query.columns))
        .collect();
    Ok(match query.page {
        None => Value::Array(rendered),
        Some(page) => {
            let page_count = filtered.div_ceil(query.page_size).max(1);
            if page > page_count {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "page_out_of_range",
                    format!(
                        "Page out of range, page: {page} page size: {}, len: {filtered}",
                        query.page_size
                    ),
                ));
            }
            serde_json::json!({
                "filtered_count": filtered,
                "item_count": rendered.len(),
                "items": rendered,
                "page": page,
                "page_count": page_count,
                "page_size": query.page_size,
                "total_count": total,
            })
        }
    })
}

/// The items of the page asked for (all without paging).
fn page_range(query: &ListQuery, count: usize) -> std::ops::Range<usize> {
    match query.page {
        None => 0..count,
        Some(page) => {
            let start = (page - 1).saturating_mul(query.page_size).min(count);
            start..start.saturating_add(query.page_size).min(count)
        }
    }
}

/// One object, cut to the columns asked for.
pub fn one(value: Value, query: &ListQuery) -> Value {
    select_columns(value, &query.columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Item(&'static str, &'static str, u64);

    impl Listed for Item {
        fn vhost(&self) -> &str {
            self.0
        }
        fn name(&self) -> &str {
            self.1
        }
        fn render(&self, _: &ListQuery) -> Value {
            json!({"vhost": self.0, "name": self.1, "messages": self.2, "stats": {"n": self.2}})
        }
    }

    fn items() -> Vec<Item> {
        vec![
            Item("/", "b", 5),
            Item("/", "a", 7),
            Item("x", "a", 1),
            Item("/", "c d", 3),
        ]
    }

    fn query(text: &str) -> ListQuery {
        ListQuery::parse(Some(text)).unwrap()
    }

    #[test]
    fn lists_sort_by_vhost_and_name_unless_asked() {
        let all = respond(items(), &query("")).unwrap();
        let names: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["a", "b", "c d", "a"]);
        let sorted = respond(items(), &query("sort=stats.n&sort_reverse=true")).unwrap();
        let counts: Vec<u64> = sorted
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["messages"].as_u64().unwrap())
            .collect();
        assert_eq!(counts, [7, 5, 3, 1]);
    }

    #[test]
    fn pages_filter_by_name_and_count_what_they_hold() {
        let page = respond(items(), &query("page=2&page_size=1&name=A")).unwrap();
        assert_eq!(page["filtered_count"], 2);
        assert_eq!(page["total_count"], 4);
        assert_eq!(page["page_count"], 2);
        assert_eq!(page["items"][0]["vhost"], "x");
        let regex = respond(items(), &query("page=1&name=%5EC%5Cs&use_regex=true")).unwrap();
        assert_eq!(regex["items"][0]["name"], "c d");
        assert!(respond(items(), &query("page=1&name=(&use_regex=true")).is_err());
        assert!(respond(items(), &query("page=9")).is_err());
        // A page far past the end is refused, not computed.
        assert!(respond(items(), &query("page=9223372036854775807&page_size=500")).is_err());
    }

    #[test]
    fn columns_keep_nested_paths() {
        let cut = respond(items(), &query("columns=name,stats.n,absent")).unwrap();
        assert_eq!(cut[0], json!({"name": "a", "stats": {"n": 7}}));
    }

    #[test]
    fn bad_paging_is_refused() {
        for bad in [
            "page=0",
            "page=abc",
            "page=1&page_size=0",
            "page=1&page_size=501",
        ] {
            assert!(ListQuery::parse(Some(bad)).is_err(), "{bad}");
        }
        // Without a page, page_size is not read.
        assert!(ListQuery::parse(Some("page_size=x")).is_ok());
        assert_eq!(query("name=a+b%2Fc").name.as_deref(), Some("a b/c"));
    }

    #[test]
    fn ranges_are_read_as_rabbitmq_reads_them() {
        let ranges = query("lengths_age=60&lengths_incr=5&msg_rates_age=%2B600&msg_rates_incr=05")
            .ranges()
            .unwrap();
        assert_eq!(
            ranges.lengths,
            Some(Range {
                age_s: 60,
                incr_s: 5
            })
        );
        assert_eq!(
            ranges.msg_rates,
            Some(Range {
                age_s: 600,
                incr_s: 5
            })
        );
        assert_eq!(ranges.data_rates, None);
        // Not integers, or half a range: ignored, as RabbitMQ ignores them.
        for ignored in [
            "lengths_age=abc&lengths_incr=5",
            "lengths_age=60",
            "lengths_age=60.0&lengths_incr=5",
            "lengths_age=&lengths_incr=5",
            "lengths_age=%2060&lengths_incr=5",
            "data_rates_incr=5",
        ] {
            assert_eq!(
                query(ignored).ranges().unwrap(),
                Ranges::default(),
                "{ignored}"
            );
        }
        // The first of a repeated name counts.
        let first = query("lengths_age=60&lengths_incr=5&lengths_age=0").ranges();
        assert_eq!(
            first.unwrap().lengths,
            Some(Range {
                age_s: 60,
                incr_s: 5
            })
        );
    }

    #[test]
    fn bad_ranges_are_refused_with_rabbitmqs_words() {
        for (bad, reason) in [
            ("lengths_age=60&lengths_incr=0", "age 60, incr 0"),
            ("lengths_age=0&lengths_incr=5", "age 0, incr 5"),
            ("msg_rates_age=-60&msg_rates_incr=5", "age -60, incr 5"),
            ("data_rates_age=2505&data_rates_incr=5", "age 2505, incr 5"),
            ("node_stats_age=60&node_stats_incr=-0", "age 60, incr 0"),
            // The first prefix refused is named.
            (
                "msg_rates_age=70&msg_rates_incr=0&lengths_age=60&lengths_incr=0",
                "age 60, incr 0",
            ),
        ] {
            let parsed = query(bad);
            let refused = parsed.ranges().unwrap_err();
            assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{bad}");
            assert_eq!(refused.error, "bad_request");
            assert_eq!(
                refused.reason,
                format!("Invalid range parameters: {reason}")
            );
            let listed = parsed.check_list_ranges().unwrap_err();
            assert_eq!(listed.error, "invalid_range_parameters");
        }
        // At most 500 increments.
        assert!(query("lengths_age=2500&lengths_incr=5").ranges().is_ok());
        let huge = query("lengths_age=99999999999999999999999&lengths_incr=1");
        assert!(huge.ranges().is_err());
    }
}
