//! CEL conditions: compiled once when policies load, evaluated per decision against one scope.
//!
//! Building a CEL context with the standard library costs tens of microseconds, so a policy set
//! holds one root context (standard library plus our helpers) and every decision takes a cheap
//! inner scope of it. The scope's variables resolve through [`Input`]: each of `principal`,
//! `resource`, `action` and `context` is converted into CEL values (borrowing the request's
//! strings) when a condition first names it, and at most once per request (principal and context:
//! once per batch). A field named with a dot (`resource.owner`, `context.ip`) is answered by
//! itself, without building the maps around it: the interpreter asks for the dotted name before
//! its prefix, and most conditions only read a few strings (see the resolver's comment).
//!
//! The commonest shapes of condition are answered without the interpreter at all ([`native`]);
//! the interpreter answers the rest, and whatever would be an error there.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, LazyLock, OnceLock};

use cel::common::ast::{CallExpr, EntryExpr, Expr, LiteralValue};
use cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelTimestamp,
    CelUInt,
};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, ExecutionError, FunctionContext, IdedExpr, Program, Value};
use chrono::{DateTime, Datelike, FixedOffset, NaiveTime, Timelike};
use ipnet::{IpNet, Ipv4Net};
use serde_json::Value as Json;

use crate::request::{Principal, RequestContext, Resource};
use gatehouse_service::ip_text::Ipv4Text;

mod native;
use native::Native;

/// The variables a condition may name.
pub const VARIABLES: [&str; 4] = ["principal", "resource", "action", "context"];

/// Our helpers, beside CEL's standard library.
pub const HELPERS: [&str; 3] = ["ipInRange", "timeBetween", "isWeekday"];

/// A compiled CEL expression with its source, for explanations and errors.
#[derive(Debug, Clone)]
pub struct Expression {
    pub source: Arc<str>,
    program: Arc<Program>,
    /// The same condition answered without the interpreter, when its shape allows.
    native: Option<Arc<Native>>,
}

impl Expression {
    /// Parses `source` and checks that it names only known variables and functions, and that
    /// the helper arguments it writes as literals can be read, so a typo fails the load instead
    /// of denying every request at run time.
    pub fn compile(source: &str) -> Result<Self, String> {
        let program = Program::compile(source).map_err(|e| {
            // The crate's message repeats "<input>" and draws a caret; keep the first line.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("").to_string();
            first.replace("ERROR: <input>:", "CEL syntax error at ")
        })?;
        let mut bound = HashSet::new();
        comprehension_variables(program.expression(), &mut bound);
        let references = program.references();
        let mut unknown_vars: Vec<_> = references
            .variables()
            .into_iter()
            .filter(|v| !VARIABLES.contains(v) && !bound.contains(*v))
            .collect();
        unknown_vars.sort_unstable();
        if let Some(v) = unknown_vars.first() {
            return Err(format!(
                "unknown variable `{v}` (conditions can use {})",
                VARIABLES.join(", ")
            ));
        }
        let mut unknown_fns: Vec<_> = references
            .functions()
            .into_iter()
            .filter(|f| !is_known_function(f))
            .collect();
        unknown_fns.sort_unstable();
        if let Some(f) = unknown_fns.first() {
            return Err(format!(
                "unknown function `{f}` (helpers: {})",
                HELPERS.join(", ")
            ));
        }
        check_literal_arguments(program.expression())?;
        Ok(Self {
            source: source.into(),
            native: Native::of(program.expression()).map(Arc::new),
            program: Arc::new(program),
        })
    }

    /// `Ok(true|false)` for a boolean result; an error for anything else, so that a condition
    /// returning a string or failing on a missing key is never read as "true".
    pub fn evaluate(&self, scope: &Scope<'_, '_, '_>) -> Result<bool, String> {
        if let Some(answer) = self.native.as_ref().and_then(|n| n.evaluate(scope.input)) {
            return Ok(answer);
        }
        match self.program.execute(&scope.cel) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!(
                "condition returned {}, not a bool",
                other.type_of()
            )),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Calls `f` on `e` and on every expression inside it, parents first.
fn visit<'a>(e: &'a IdedExpr, f: &mut impl FnMut(&'a IdedExpr)) {
    f(e);
    match &e.expr {
        Expr::Comprehension(c) => {
            for sub in [
                &c.iter_range,
                &c.accu_init,
                &c.loop_cond,
                &c.loop_step,
                &c.result,
            ] {
                visit(sub, f);
            }
        }
        Expr::Call(call) => {
            if let Some(t) = &call.target {
                visit(t, f);
            }
            call.args.iter().for_each(|a| visit(a, f));
        }
        Expr::List(l) => l.elements.iter().for_each(|a| visit(a, f)),
        Expr::Map(m) => m.entries.iter().for_each(|entry| {
            if let EntryExpr::MapEntry(me) = &entry.expr {
                visit(&me.key, f);
                visit(&me.value, f);
            }
        }),
        Expr::Struct(st) => st.entries.iter().for_each(|entry| {
            if let EntryExpr::StructField(field) = &entry.expr {
                visit(&field.value, f);
            }
        }),
        Expr::Select(sel) => visit(&sel.operand, f),
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
    }
}

fn comprehension_variables<'a>(e: &'a IdedExpr, out: &mut HashSet<&'a str>) {
    visit(e, &mut |e| {
        if let Expr::Comprehension(c) = &e.expr {
            out.insert(&c.iter_var);
            if let Some(v) = &c.iter_var2 {
                out.insert(v);
            }
            out.insert(&c.accu_var);
        }
    });
}

/// What a helper reads from each of its arguments, for checking literals at load.
#[derive(Clone, Copy)]
enum Argument {
    /// Computed at run time (a timestamp): nothing to check at load.
    Any,
    Ip,
    /// One range, or a list of them.
    Ranges,
    Clock,
    Zone,
}

impl Argument {
    /// The argument kinds of one of our helpers, by position; `None` for other functions.
    fn of_helper(name: &str) -> Option<&'static [Argument]> {
        use Argument::*;
        match name {
            "ipInRange" => Some(&[Ip, Ranges]),
            "timeBetween" => Some(&[Any, Clock, Clock, Zone]),
            "isWeekday" => Some(&[Any, Zone]),
            _ => None,
        }
    }

    /// Reads a string with the parser the helper uses at run time.
    fn read(self, s: &str) -> Result<(), String> {
        match self {
            Argument::Any => Ok(()),
            Argument::Ip => parse_ip(s).map(drop),
            Argument::Ranges => parse_range(s).map(drop),
            Argument::Clock => parse_clock(s).map(drop),
            Argument::Zone => parse_zone(s).map(drop),
        }
    }
}

/// Checks the helper arguments written as string literals (or, for ranges, lists of them) with
/// the parsers the helpers use at run time: a range, address, time of day or zone that can never
/// be read would otherwise make the condition an error on every evaluation. Arguments computed
/// from the request can only be checked then.
fn check_literal_arguments(e: &IdedExpr) -> Result<(), String> {
    let mut first_error = None;
    visit(e, &mut |e| {
        if let (None, Expr::Call(call)) = (&first_error, &e.expr) {
            first_error = check_call(call).err();
        }
    });
    first_error.map_or(Ok(()), Err)
}

fn check_call(call: &CallExpr) -> Result<(), String> {
    // Our helpers are global functions: called as a method, the call fails on its arguments at
    // run time whatever they are.
    let (None, Some(kinds)) = (&call.target, Argument::of_helper(&call.func_name)) else {
        return Ok(());
    };
    let helper = &call.func_name;
    for (i, (arg, kind)) in call.args.iter().zip(kinds).enumerate() {
        let n = i + 1;
        match (&arg.expr, kind) {
            (Expr::Literal(LiteralValue::String(s)), _) => kind
                .read(s.inner())
                .map_err(|m| format!("`{helper}` argument {n}: {m}"))?,
            (Expr::List(list), Argument::Ranges) => {
                for (j, item) in list.elements.iter().enumerate() {
                    if let Expr::Literal(LiteralValue::String(s)) = &item.expr {
                        kind.read(s.inner())
                            .map_err(|m| format!("`{helper}` argument {n}, item {}: {m}", j + 1))?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// CEL's standard functions, kept to those this version of the crate really declares (asked by
/// registering under the name, which it refuses for a declared one). Macros such as `has` and
/// `exists` are expanded by the parser and never appear as calls.
static STANDARD_FUNCTIONS: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    const CANDIDATES: &[&str] = &[
        "size",
        "contains",
        "startsWith",
        "endsWith",
        "matches",
        "int",
        "uint",
        "double",
        "string",
        "bytes",
        "bool",
        "type",
        "dyn",
        "duration",
        "timestamp",
        "getFullYear",
        "getMonth",
        "getDayOfYear",
        "getDayOfMonth",
        "getDate",
        "getDayOfWeek",
        "getHours",
        "getMinutes",
        "getSeconds",
        "getMilliseconds",
    ];
    CANDIDATES
        .iter()
        .copied()
        .filter(|name| {
            let mut probe = Context::default();
            probe.add_function(name, |x: i64| x).is_err()
        })
        .collect()
});

fn is_known_function(name: &str) -> bool {
    // Operators (`_==_`, `!_`, `@in`, `_[_]`) come from the parser, not from user text.
    name.starts_with('_')
        || name.starts_with('@')
        || name.starts_with('!')
        || HELPERS.contains(&name)
        || STANDARD_FUNCTIONS.contains(name)
}

/// The context every decision's scope descends from: CEL's standard library and our helpers.
pub fn root_context() -> Context<'static, 'static> {
    let mut root = Context::default();
    // Names are ours and not standard: registration cannot conflict.
    let _ = root.add_function("ipInRange", ip_in_range);
    let _ = root.add_function("timeBetween", time_between);
    let _ = root.add_function("isWeekday", is_weekday);
    root
}

fn helper_error(function: &str, message: impl ToString) -> ExecutionError {
    ExecutionError::function_error(function, message)
}

/// The helpers read their arguments as the interpreter resolved them (borrowed CEL values):
/// nothing is converted to a `Value` on the way in. Only error messages convert, for the type name.
fn type_name(v: &dyn Val) -> String {
    match Value::try_from(v) {
        Ok(value) => value.type_of().to_string(),
        Err(_) => v.get_type().name().to_string(),
    }
}

fn is_null(v: &dyn Val) -> bool {
    v.downcast_ref::<CelNull>().is_some()
}

/// An address as `ipInRange` reads it. An IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, how a
/// dual-stack socket reports an IPv4 client) is the IPv4 address it carries: compared as IPv6,
/// it would escape every IPv4 range of a deny list.
pub fn parse_ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map(|ip| ip.to_canonical())
        .map_err(|_| format!("{s:?} is not an IP address"))
}

/// A range as `ipInRange` reads it: CIDR (`10.0.0.0/8`) or a single address. A range inside the
/// IPv4-mapped block (`::ffff:10.0.0.0/104`) is the IPv4 range it maps, since addresses in it
/// are read as IPv4 (see [`parse_ip`]); otherwise a deny list written that way would stop
/// matching the very clients it names.
pub fn parse_range(s: &str) -> Result<IpNet, String> {
    if let Some(net) = plain_ipv4_range(s) {
        return Ok(net);
    }
    let net: IpNet = s
        .parse()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR range"))?;
    let IpNet::V6(v6) = net else {
        return Ok(net);
    };
    let mapped = v6.network().to_ipv4_mapped();
    match (mapped, v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(len)) => Ok(Ipv4Net::new(v4, len).map(IpNet::V4).unwrap_or(net)),
        _ => Ok(net),
    }
}

/// `a.b.c.d/n` or `a.b.c.d`, as policies write IPv4 ranges, read with the standard library's
/// strict address parser: the general parser below (ipnet's) cost more than the rest of an
/// `ipInRange` call, and a literal range is read at every call. Anything else, including what
/// is odd here (`/08`, `/33`), is `None` and goes to the general parser, which decides.
fn plain_ipv4_range(s: &str) -> Option<IpNet> {
    let (addr, len) = match s.split_once('/') {
        Some((addr, len)) => (addr, Some(len)),
        None => (s, None),
    };
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len = match len.map(str::as_bytes) {
        None => 32,
        Some([d @ b'0'..=b'9']) => d - b'0',
        Some([t @ b'1'..=b'3', d @ b'0'..=b'9']) => (t - b'0') * 10 + (d - b'0'),
        Some(_) => return None,
    };
    Ipv4Net::new(addr, len).ok().map(IpNet::V4)
}

/// `ipInRange(ip, "10.0.0.0/8")` or `ipInRange(ip, ["10.0.0.0/8", "192.168.0.0/16"])`.
fn ip_in_range(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    const NAME: &str = "ipInRange";
    let [ip, ranges] = ftx.args.as_slice() else {
        return Err(helper_error(NAME, "takes (ip, range or list of ranges)"));
    };
    let ip = match ip.downcast_ref::<CelString>() {
        Some(s) => parse_ip(s.inner()).map_err(|m| helper_error(NAME, m))?,
        None if is_null(ip.as_ref()) => {
            return Err(helper_error(NAME, "no IP address in the request"))
        }
        None => {
            return Err(helper_error(
                NAME,
                format!("ip is a {}", type_name(ip.as_ref())),
            ))
        }
    };
    let contains = |range: &dyn Val| -> Result<bool, ExecutionError> {
        let Some(s) = range.downcast_ref::<CelString>() else {
            return Err(helper_error(NAME, "ranges are strings like \"10.0.0.0/8\""));
        };
        let net = parse_range(s.inner()).map_err(|m| helper_error(NAME, m))?;
        Ok(net.contains(&ip))
    };
    let inside = match ranges.downcast_ref::<CelList>() {
        Some(list) => {
            let mut any = false;
            for r in list.inner() {
                any |= contains(r.as_ref())?;
            }
            any
        }
        None => contains(ranges.as_ref())?,
    };
    Ok(Value::Bool(inside))
}

/// A time of day as `timeBetween` reads it: `"HH:MM"`, 00:00 to 23:59.
pub fn parse_clock(s: &str) -> Result<NaiveTime, String> {
    // Two digits, a colon, two digits, in range: read by hand. chrono's `parse_from_str` parses
    // its format string at every call; anything else goes to it, and it decides.
    if let [h1 @ b'0'..=b'2', h2 @ b'0'..=b'9', b':', m1 @ b'0'..=b'5', m2 @ b'0'..=b'9'] =
        *s.as_bytes()
    {
        let digits = |a: u8, b: u8| u32::from(a - b'0') * 10 + u32::from(b - b'0');
        if let Some(t) = NaiveTime::from_hms_opt(digits(h1, h2), digits(m1, m2), 0) {
            return Ok(t);
        }
    }
    NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| format!("{s:?} is not a time of day like \"09:30\""))
}

/// A time zone as `timeBetween` and `isWeekday` read it: an IANA name such as `"Europe/Paris"`.
pub fn parse_zone(s: &str) -> Result<chrono_tz::Tz, String> {
    // Policies name one zone or two: the last one read on this thread is kept, so the name is
    // compared instead of hashed into chrono-tz's table at every call.
    thread_local! {
        static LAST: std::cell::RefCell<Option<(String, chrono_tz::Tz)>> =
            const { std::cell::RefCell::new(None) };
    }
    let cached = LAST.try_with(|last| {
        last.try_borrow()
            .ok()?
            .as_ref()
            .and_then(|(name, tz)| (name == s).then_some(*tz))
    });
    if let Ok(Some(tz)) = cached {
        return Ok(tz);
    }
    let tz: chrono_tz::Tz = s.parse().map_err(|_| format!("unknown time zone {s:?}"))?;
    let _ = LAST.try_with(|last| {
        if let Ok(mut last) = last.try_borrow_mut() {
            *last = Some((s.to_string(), tz));
        }
    });
    Ok(tz)
}

fn local_time(
    name: &str,
    at: &dyn Val,
    zone: Option<&dyn Val>,
) -> Result<chrono::NaiveDateTime, ExecutionError> {
    let Some(t) = at.downcast_ref::<CelTimestamp>() else {
        return Err(helper_error(
            name,
            "the first argument must be a timestamp, such as context.time",
        ));
    };
    let zone = match zone {
        None => None,
        Some(zone) => match zone.downcast_ref::<CelString>() {
            Some(z) => Some(parse_zone(z.inner()).map_err(|m| helper_error(name, m))?),
            None => {
                return Err(helper_error(
                    name,
                    format!("the time zone is a {}, not a string", type_name(zone)),
                ))
            }
        },
    };
    Ok(local_time_in(t.inner(), zone))
}

/// The wall-clock time of `t` in `zone`, UTC when none is named.
fn local_time_in(t: &DateTime<FixedOffset>, zone: Option<chrono_tz::Tz>) -> chrono::NaiveDateTime {
    match zone {
        None => t.naive_utc(),
        Some(tz) => in_zone(t, tz),
    }
}

/// The wall-clock time of `t` in `tz`. `isWeekday` and `timeBetween` usually ask it of the same
/// instant and zone one after the other: the last answer is kept on the thread (the zone's
/// transitions are searched once).
fn in_zone(t: &DateTime<FixedOffset>, tz: chrono_tz::Tz) -> chrono::NaiveDateTime {
    type Last = Option<(DateTime<FixedOffset>, chrono_tz::Tz, chrono::NaiveDateTime)>;
    thread_local! {
        static LAST: std::cell::Cell<Last> = const { std::cell::Cell::new(None) };
    }
    if let Ok(Some((at, zone, local))) = LAST.try_with(std::cell::Cell::get) {
        // `==` on the instant and the offset both: the same value, not only the same instant.
        if at == *t && at.offset() == t.offset() && zone == tz {
            return local;
        }
    }
    let local = t.with_timezone(&tz).naive_local();
    let _ = LAST.try_with(|last| last.set(Some((*t, tz, local))));
    local
}

/// `timeBetween(context.time, "09:00", "18:00"[, "Europe/Paris"])`: from inclusive, to exclusive,
/// UTC unless a zone is named. A window whose end is before its start spans midnight.
fn time_between(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    const NAME: &str = "timeBetween";
    let (at, from, to, zone) = match ftx.args.as_slice() {
        [at, from, to] => (at, from, to, None),
        [at, from, to, zone] => (at, from, to, Some(zone.as_ref())),
        _ => {
            return Err(helper_error(
                NAME,
                "takes (time, \"HH:MM\", \"HH:MM\"[, zone])",
            ))
        }
    };
    let clock = |v: &dyn Val| -> Result<NaiveTime, ExecutionError> {
        match v.downcast_ref::<CelString>() {
            Some(s) => parse_clock(s.inner()).map_err(|m| helper_error(NAME, m)),
            None => Err(helper_error(
                NAME,
                "times of day are strings like \"09:30\"",
            )),
        }
    };
    let (from, to) = (clock(from.as_ref())?, clock(to.as_ref())?);
    let now = local_time(NAME, at.as_ref(), zone)?.time();
    Ok(Value::Bool(in_window(now, from, to)))
}

/// Whether `now` (to the second) is in `[from, to)`; a window whose end is before its start
/// spans midnight.
fn in_window(now: NaiveTime, from: NaiveTime, to: NaiveTime) -> bool {
    let now = NaiveTime::from_hms_opt(now.hour(), now.minute(), now.second()).unwrap_or(now);
    if from <= to {
        from <= now && now < to
    } else {
        now >= from || now < to
    }
}

/// `isWeekday(context.time[, "Europe/Paris"])`: Monday to Friday.
fn is_weekday(ftx: &FunctionContext) -> Result<Value, ExecutionError> {
    const NAME: &str = "isWeekday";
    let (at, zone) = match ftx.args.as_slice() {
        [at] => (at, None),
        [at, zone] => (at, Some(zone.as_ref())),
        _ => return Err(helper_error(NAME, "takes (time[, zone])")),
    };
    Ok(Value::Bool(is_weekday_at(local_time(
        NAME,
        at.as_ref(),
        zone,
    )?)))
}

fn is_weekday_at(local: chrono::NaiveDateTime) -> bool {
    local.weekday().number_from_monday() <= 5
}

/// A request value as CEL sees it. It borrows the request's strings: converting copies no
/// string, it only allocates the maps, lists and boxes that hold them.
pub type CelVal<'r> = Box<dyn Val + 'r>;

/// What every check of one request (or one batch) shares: the principal and the context. Each
/// value is converted for CEL when a condition first names it, at most once.
pub struct SharedInput<'r> {
    principal: &'r Principal,
    context: &'r RequestContext,
    /// The time conditions see when the request names none (a frozen clock); else the clock is
    /// read when a condition first needs the time.
    now: Option<DateTime<FixedOffset>>,
    principal_val: OnceLock<CelVal<'r>>,
    context_val: OnceLock<CelVal<'r>>,
    roles_val: OnceLock<CelVal<'r>>,
    attributes_val: OnceLock<CelVal<'r>>,
    /// `context.time` as conditions see it: one instant for the whole decision.
    time: OnceLock<DateTime<FixedOffset>>,
    // Fields answered by name, converted in place (no box) and lent to the interpreter.
    time_val: OnceLock<CelTimestamp>,
    /// `context.ip` in its canonical text form.
    ip_val: OnceLock<Option<CelString<'static>>>,
    /// Strings are lent as they are (a CEL string borrowing the request's): made up front, since
    /// that costs less than a `OnceLock`'s first `get_or_init`.
    sub_val: CelString<'r>,
}

impl<'r> SharedInput<'r> {
    pub fn new(
        principal: &'r Principal,
        context: &'r RequestContext,
        now: Option<DateTime<FixedOffset>>,
    ) -> Self {
        Self {
            principal,
            context,
            now,
            principal_val: OnceLock::new(),
            context_val: OnceLock::new(),
            roles_val: OnceLock::new(),
            attributes_val: OnceLock::new(),
            time: OnceLock::new(),
            time_val: OnceLock::new(),
            ip_val: OnceLock::new(),
            sub_val: CelString::from(principal.sub.as_str()),
        }
    }

    fn principal(&self) -> &(dyn Val + 'r) {
        self.principal_val
            .get_or_init(|| principal_val(self.principal))
            .as_ref()
    }

    fn context(&self) -> &(dyn Val + 'r) {
        self.context_val
            .get_or_init(|| context_val(self.context, self.time()))
            .as_ref()
    }

    fn time(&self) -> DateTime<FixedOffset> {
        *self.time.get_or_init(|| {
            self.context
                .time
                .or(self.now)
                .unwrap_or_else(|| chrono::Utc::now().fixed_offset())
        })
    }

    /// `principal.<path>`, without converting the rest of the principal.
    fn principal_field(&self, path: &str) -> Option<CowVal<'_, '_>> {
        let p = self.principal;
        match split_dot(path) {
            None => match path {
                "sub" => Some(CowVal::Borrowed(&self.sub_val)),
                "roles" => Some(CowVal::Borrowed(
                    self.roles_val.get_or_init(|| roles_val(&p.roles)).as_ref(),
                )),
                "attributes" => Some(CowVal::Borrowed(
                    self.attributes_val
                        .get_or_init(|| object(&p.attributes))
                        .as_ref(),
                )),
                _ => None,
            },
            Some(("attributes", inside)) => scalar_at(&p.attributes, inside),
            Some(_) => None,
        }
    }

    /// `context.<path>`, without converting the rest of the context. `ip` and `time` are the
    /// typed fields (they shadow keys of the same name, as in the whole context).
    fn context_field(&self, path: &str) -> Option<CowVal<'_, '_>> {
        let (key, inside) = match split_dot(path) {
            Some((key, inside)) => (key, Some(inside)),
            None => (path, None),
        };
        match (key, inside) {
            ("ip", None) => Some(CowVal::Borrowed(
                match self.ip_val.get_or_init(|| {
                    self.context
                        .ip
                        .map(|ip| CelString::from(ip_text(ip.to_canonical())))
                }) {
                    Some(ip) => ip,
                    None => &NULL,
                },
            )),
            ("time", None) => Some(CowVal::Borrowed(
                self.time_val
                    .get_or_init(|| CelTimestamp::from(self.time())),
            )),
            ("ip" | "time", Some(_)) => None,
            (key, None) => self.context.extra.get(key).and_then(scalar),
            (key, Some(inside)) => match self.context.extra.get(key) {
                Some(Json::Object(o)) => scalar_at(o, inside),
                _ => None,
            },
        }
    }
}

/// The variables of one check: the shared `principal` and `context`, and this check's
/// `resource` and `action`, each converted on first use. Conditions see them through
/// [`Input::scope`]; a variable no condition names is never converted.
pub struct Input<'s, 'r> {
    shared: &'s SharedInput<'r>,
    resource: &'s Resource,
    action: &'s str,
    resource_val: OnceLock<CelVal<'s>>,
    action_val: OnceLock<CelVal<'s>>,
    attributes_val: OnceLock<CelVal<'s>>,
    // Borrowing strings, made up front (see `SharedInput::sub_val`).
    kind_val: CelString<'s>,
    id_val: CelString<'s>,
    owner_val: Option<CelString<'s>>,
}

impl<'s, 'r> Input<'s, 'r> {
    pub fn new(shared: &'s SharedInput<'r>, resource: &'s Resource, action: &'s str) -> Self {
        Self {
            shared,
            resource,
            action,
            resource_val: OnceLock::new(),
            action_val: OnceLock::new(),
            attributes_val: OnceLock::new(),
            kind_val: CelString::from(resource.kind.as_str()),
            id_val: CelString::from(resource.id.as_str()),
            owner_val: resource.owner.as_deref().map(CelString::from),
        }
    }

    /// The scope conditions are evaluated in: `root` (CEL's standard library and our helpers)
    /// with these variables. Building it allocates nothing.
    ///
    /// `root` is the policy set's `Context<'static, 'static>`; it coerces to any shorter lifetime.
    pub fn scope<'x>(&'x self, root: &'x Context<'x, 'x>) -> Scope<'x, 's, 'r> {
        let mut cel = root.new_inner_scope();
        cel.set_variable_resolver(self);
        Scope { input: self, cel }
    }

    /// `resource.<path>`, without converting the rest of the resource.
    fn resource_field(&self, path: &str) -> Option<CowVal<'_, '_>> {
        let r = self.resource;
        match split_dot(path) {
            None => match path {
                "type" => Some(CowVal::Borrowed(&self.kind_val)),
                "id" => Some(CowVal::Borrowed(&self.id_val)),
                "owner" => Some(CowVal::Borrowed(match &self.owner_val {
                    Some(owner) => owner,
                    None => &NULL,
                })),
                "attributes" => Some(CowVal::Borrowed(
                    self.attributes_val
                        .get_or_init(|| object(&r.attributes))
                        .as_ref(),
                )),
                _ => None,
            },
            Some(("attributes", inside)) => scalar_at(&r.attributes, inside),
            Some(_) => None,
        }
    }
}

/// Where a check's conditions are evaluated: its variables, and the interpreter's scope over
/// them.
pub struct Scope<'x, 's, 'r> {
    input: &'x Input<'s, 'r>,
    cel: Context<'x, 'x>,
}

/// The interpreter asks for a dotted name whole first (`context.ip`), then for shorter and
/// shorter prefixes of it (`context`), selecting the remaining fields from what it gets. Fields
/// of the request are answered whole where that converts no more than the field: a string, a
/// number, the roles list or an attributes map (each converted once). Anything else (a key that
/// is not there, an object or a list inside the attributes) is left to the prefix, converted
/// whole as before, so that errors and results are those of CEL's own field selection.
impl VariableResolver for Input<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if let Some((root, path)) = split_dot(variable) {
            return match root {
                "principal" => self.shared.principal_field(path),
                "resource" => self.resource_field(path),
                "context" => self.shared.context_field(path),
                _ => None,
            };
        }
        let value: &'b (dyn Val + 'b) = match variable {
            "principal" => self.shared.principal(),
            "context" => self.shared.context(),
            "resource" => self
                .resource_val
                .get_or_init(|| resource_val(self.resource))
                .as_ref(),
            "action" => self.action_val.get_or_init(|| string(self.action)).as_ref(),
            _ => return None,
        };
        Some(CowVal::Borrowed(value))
    }
}

/// `null`, lent to the interpreter for absent fields.
static NULL: CelNull = CelNull;

/// `a.b.c` → (`a`, `b.c`): `split_once('.')` without the general pattern searcher, which cost
/// more than the rest of answering a short name.
fn split_dot(name: &str) -> Option<(&str, &str)> {
    let dot = name.bytes().position(|b| b == b'.')?;
    Some((&name[..dot], &name[dot + 1..]))
}

/// A JSON value that converts without allocating more than its box: null, a boolean, a number
/// or a string.
fn scalar(j: &Json) -> Option<CowVal<'_, '_>> {
    match j {
        Json::Array(_) | Json::Object(_) => None,
        scalar => Some(CowVal::Owned(json_val(scalar))),
    }
}

/// The scalar at the dotted `path` inside `map`, if every step is there.
fn scalar_at<'j>(map: &'j serde_json::Map<String, Json>, path: &str) -> Option<CowVal<'j, 'j>> {
    let mut map = map;
    let mut keys = path.split('.');
    let mut key = keys.next()?;
    for next in keys {
        match map.get(key)? {
            Json::Object(inner) => map = inner,
            _ => return None,
        }
        key = next;
    }
    scalar(map.get(key)?)
}

fn string(s: &str) -> CelVal<'_> {
    Box::new(CelString::from(s))
}

fn key(s: &str) -> CelMapKey<'_> {
    CelMapKey::String(CelString::from(s))
}

fn map<'r, const N: usize>(entries: [(&'static str, CelVal<'r>); N]) -> CelVal<'r> {
    let map: HashMap<CelMapKey<'r>, CelVal<'r>> =
        entries.into_iter().map(|(k, v)| (key(k), v)).collect();
    Box::new(CelMap::from(map))
}

/// A JSON value (attributes, extra context keys) as CEL: numbers that fit `int` are ints, then
/// `uint`, else doubles.
fn json_val(j: &Json) -> CelVal<'_> {
    match j {
        Json::Null => Box::new(CelNull),
        Json::Bool(b) => Box::new(CelBool::from(*b)),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            _ => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        Json::String(s) => string(s),
        Json::Array(items) => Box::new(CelList::from(
            items.iter().map(json_val).collect::<Vec<_>>(),
        )),
        Json::Object(o) => object(o),
    }
}

fn object(o: &serde_json::Map<String, Json>) -> CelVal<'_> {
    let map: HashMap<CelMapKey<'_>, CelVal<'_>> =
        o.iter().map(|(k, v)| (key(k), json_val(v))).collect();
    Box::new(CelMap::from(map))
}

fn roles_val(roles: &[String]) -> CelVal<'_> {
    Box::new(CelList::from(
        roles.iter().map(|r| string(r)).collect::<Vec<_>>(),
    ))
}

fn principal_val(p: &Principal) -> CelVal<'_> {
    map([
        ("sub", string(&p.sub)),
        ("roles", roles_val(&p.roles)),
        ("attributes", object(&p.attributes)),
    ])
}

fn resource_val(r: &Resource) -> CelVal<'_> {
    map([
        ("type", string(&r.kind)),
        ("id", string(&r.id)),
        (
            "owner",
            match r.owner.as_deref() {
                Some(owner) => string(owner),
                None => Box::new(CelNull),
            },
        ),
        ("attributes", object(&r.attributes)),
    ])
}

fn ip_text(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => Ipv4Text::new(v4).as_str().to_string(),
        IpAddr::V6(_) => ip.to_string(),
    }
}

/// `time` is resolved by the caller (the request's, a frozen clock, or now). Keys of `extra`
/// named `ip` or `time` are shadowed by the typed fields, as before.
fn context_val(c: &RequestContext, time: DateTime<FixedOffset>) -> CelVal<'_> {
    let mut entries: HashMap<CelMapKey<'_>, CelVal<'_>> = HashMap::with_capacity(c.extra.len() + 2);
    for (k, v) in &c.extra {
        entries.insert(key(k), json_val(v));
    }
    let ip: CelVal<'_> = match c.ip {
        // Canonical for a request built in-process too (parsed ones already are): see `parse_ip`.
        Some(ip) => Box::new(CelString::from(ip_text(ip.to_canonical()))),
        None => Box::new(CelNull),
    };
    entries.insert(key("ip"), ip);
    entries.insert(key("time"), Box::new(CelTimestamp::from(time)));
    Box::new(CelMap::from(entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(source: &str, context: serde_json::Value) -> Result<bool, String> {
        let ctx: RequestContext = serde_json::from_value(context).map_err(|e| e.to_string())?;
        eval_in(source, ctx)
    }

    fn eval_in(source: &str, ctx: RequestContext) -> Result<bool, String> {
        let root = root_context();
        let expr = Expression::compile(source)?;
        let time = ctx
            .time
            .unwrap_or_else(|| chrono::Utc::now().fixed_offset());
        let principal = Principal {
            sub: "alice".into(),
            roles: vec!["editor".into()],
            ..Default::default()
        };
        let resource = Resource {
            kind: "document".into(),
            id: "d1".into(),
            owner: Some("alice".into()),
            ..Default::default()
        };
        let shared = SharedInput::new(&principal, &ctx, Some(time));
        let input = Input::new(&shared, &resource, "edit");
        let scope = input.scope(&root);
        expr.evaluate(&scope)
    }

    #[test]
    fn ip_in_range_takes_one_range_or_a_list() {
        let ctx = serde_json::json!({"ip": "10.1.2.3"});
        assert_eq!(
            eval("ipInRange(context.ip, '10.0.0.0/8')", ctx.clone()),
            Ok(true)
        );
        assert_eq!(
            eval("ipInRange(context.ip, '192.168.0.0/16')", ctx.clone()),
            Ok(false)
        );
        assert_eq!(
            eval(
                "ipInRange(context.ip, ['192.168.0.0/16', '10.1.2.3'])",
                ctx.clone()
            ),
            Ok(true)
        );
        let v6 = serde_json::json!({"ip": "2001:db8::1"});
        assert_eq!(
            eval("ipInRange(context.ip, '2001:db8::/32')", v6.clone()),
            Ok(true)
        );
        assert_eq!(eval("ipInRange(context.ip, '10.0.0.0/8')", v6), Ok(false));
        // A range from the request is read when evaluated (a literal one when compiled).
        let bad = eval(
            "ipInRange(context.ip, context.range)",
            serde_json::json!({"ip": "10.1.2.3", "range": "ten/8"}),
        )
        .unwrap_err();
        assert!(bad.contains("not a CIDR range"), "{bad}");
        let missing =
            eval("ipInRange(context.ip, '10.0.0.0/8')", serde_json::json!({})).unwrap_err();
        assert!(missing.contains("no IP address"), "{missing}");
    }

    #[test]
    fn ip_in_range_reads_ipv4_mapped_addresses_and_ranges_as_ipv4() {
        let none = serde_json::json!({});
        // The address as a literal, not through the request parser: the helper normalises it.
        for source in [
            "ipInRange('::ffff:10.1.2.3', '10.0.0.0/8')",
            "ipInRange('::ffff:10.1.2.3', ['192.168.0.0/16', '10.1.2.3'])",
            // A range written in the mapped form is an IPv4 range ...
            "ipInRange('10.1.2.3', '::ffff:10.0.0.0/104')",
            "ipInRange('::ffff:10.1.2.3', '::ffff:10.0.0.0/104')",
            "ipInRange('10.1.2.3', '::ffff:10.1.2.3')",
        ] {
            assert_eq!(eval(source, none.clone()), Ok(true), "{source}");
        }
        for source in [
            "ipInRange('::ffff:11.1.2.3', '10.0.0.0/8')",
            "ipInRange('11.1.2.3', '::ffff:10.0.0.0/104')",
            // ... and an IPv6 range wider than the mapped block stays an IPv6 range.
            "ipInRange('10.1.2.3', '::/64')",
        ] {
            assert_eq!(eval(source, none.clone()), Ok(false), "{source}");
        }
        // A request built in-process (not parsed) may carry the mapped form too.
        let mapped = IpAddr::from([0, 0, 0, 0, 0, 0xffff, 0x0a01, 0x0203]); // ::ffff:10.1.2.3
        let context = RequestContext {
            ip: Some(mapped),
            ..Default::default()
        };
        assert_eq!(
            eval_in(
                "context.ip == '10.1.2.3' && ipInRange(context.ip, '10.0.0.0/8')",
                context
            ),
            Ok(true)
        );
    }

    #[test]
    fn fast_readings_of_ranges_clocks_and_zones_agree_with_the_general_parsers() {
        let general_range = |s: &str| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .ok()
        };
        for s in [
            "10.0.0.0/8",
            "10.1.2.3/32",
            "0.0.0.0/0",
            "192.168.0.0/16",
            "127.0.0.1/9",
            "10.1.2.3",
            "255.255.255.255",
            "10.0.0.0/33",
            "10.0.0.0/08",
            "10.0.0.0/",
            "10.0.0/8",
            "010.0.0.0/8",
            "10.0.0.0/8 ",
            " 10.0.0.0/8",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/3a",
            "10.0.0.0/100",
            "::1/128",
            "ten/8",
            "",
        ] {
            if let Some(fast) = plain_ipv4_range(s) {
                assert_eq!(Some(fast), general_range(s), "{s:?}");
            }
        }
        assert!(plain_ipv4_range("10.0.0.0/8").is_some());
        assert!(plain_ipv4_range("10.1.2.3").is_some());
        for s in [
            "00:00", "09:30", "23:59", "19:00", "24:00", "23:60", "9:30", "09:3", "29:00", "09-30",
            "09:30 ", "", "ab:cd",
        ] {
            let general = NaiveTime::parse_from_str(s, "%H:%M").ok();
            assert_eq!(parse_clock(s).ok(), general, "{s:?}");
        }
        for s in [
            "Europe/Paris",
            "Europe/Paris",
            "UTC",
            "Europe/Pariss",
            "Europe/Paris",
            "",
        ] {
            assert_eq!(parse_zone(s).ok(), s.parse::<chrono_tz::Tz>().ok(), "{s:?}");
        }
        // The same instant twice, in another zone, written with another offset, then another.
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{e}"));
        for (t, zone) in [
            ("2026-11-23T22:30:00Z", chrono_tz::Europe::Paris),
            ("2026-11-23T22:30:00Z", chrono_tz::Europe::Paris),
            ("2026-11-23T22:30:00Z", chrono_tz::America::New_York),
            ("2026-11-23T23:30:00+01:00", chrono_tz::America::New_York),
            ("2026-07-06T17:30:00Z", chrono_tz::Europe::Paris),
        ] {
            let t = at(t);
            assert_eq!(in_zone(&t, zone), t.with_timezone(&zone).naive_local());
        }
    }

    #[test]
    fn time_between_handles_zones_and_midnight() {
        // 07:30 UTC on a Monday is 08:30 in Paris (CET in November).
        let ctx = serde_json::json!({"time": "2026-11-23T07:30:00Z"});
        assert_eq!(
            eval("timeBetween(context.time, '08:00', '18:00')", ctx.clone()),
            Ok(false)
        );
        assert_eq!(
            eval(
                "timeBetween(context.time, '08:00', '18:00', 'Europe/Paris')",
                ctx.clone()
            ),
            Ok(true)
        );
        assert_eq!(
            eval("timeBetween(context.time, '22:00', '08:00')", ctx.clone()),
            Ok(true)
        );
        assert_eq!(
            eval("timeBetween(context.time, '07:30', '07:31')", ctx.clone()),
            Ok(true)
        );
        assert_eq!(
            eval("timeBetween(context.time, '07:00', '07:30')", ctx.clone()),
            Ok(false)
        );
        assert_eq!(eval("isWeekday(context.time)", ctx.clone()), Ok(true));
        // Saturday 00:30 in Paris is still Friday in UTC.
        let sat = serde_json::json!({"time": "2026-11-27T23:30:00Z"});
        assert_eq!(eval("isWeekday(context.time)", sat.clone()), Ok(true));
        assert_eq!(
            eval("isWeekday(context.time, 'Europe/Paris')", sat),
            Ok(false)
        );
        let from_request = serde_json::json!({
            "time": "2026-11-23T07:30:00Z", "from": "8am", "zone": "Mars/Olympus",
        });
        let bad = eval(
            "timeBetween(context.time, context.from, '18:00')",
            from_request.clone(),
        )
        .unwrap_err();
        assert!(bad.contains("time of day"), "{bad}");
        let zone = eval("isWeekday(context.time, context.zone)", from_request).unwrap_err();
        assert!(zone.contains("unknown time zone"), "{zone}");
    }

    #[test]
    fn literal_arguments_are_read_at_compile_by_the_parsers_used_at_run_time() {
        // (condition with the value as a literal, the same with the value from the request,
        // the request)
        let cases = [
            (
                "ipInRange(context.ip, '10.0.0.0/33')",
                "ipInRange(context.ip, context.v)",
                serde_json::json!({"ip": "10.1.2.3", "v": "10.0.0.0/33"}),
            ),
            (
                "ipInRange(context.ip, ['10.0.0.0/8', '10.0.0.0/33'])",
                "ipInRange(context.ip, ['10.0.0.0/8', context.v])",
                serde_json::json!({"ip": "11.1.2.3", "v": "10.0.0.0/33"}),
            ),
            (
                "ipInRange('10.1.2', '10.0.0.0/8')",
                "ipInRange(context.v, '10.0.0.0/8')",
                serde_json::json!({"v": "10.1.2"}),
            ),
            (
                "timeBetween(context.time, '08:00', '24:00')",
                "timeBetween(context.time, '08:00', context.v)",
                serde_json::json!({"v": "24:00"}),
            ),
            (
                "timeBetween(context.time, '08:00', '18:00', 'Europe/Pariss')",
                "timeBetween(context.time, '08:00', '18:00', context.v)",
                serde_json::json!({"v": "Europe/Pariss"}),
            ),
            (
                "isWeekday(context.time, 'Mars/Olympus')",
                "isWeekday(context.time, context.v)",
                serde_json::json!({"v": "Mars/Olympus"}),
            ),
        ];
        for (literal, computed, context) in cases {
            let at_compile = Expression::compile(literal).map(drop).unwrap_err();
            let at_run_time = eval(computed, context).unwrap_err();
            // `` `ipInRange` argument 2: <message> `` and
            // `Error executing function 'ipInRange': <message>`: the same message.
            let message = at_compile.split_once(": ").map_or("", |(_, m)| m);
            assert!(!message.is_empty(), "{at_compile}");
            assert!(
                at_run_time.ends_with(&format!(": {message}")),
                "{literal}: {at_compile} / {at_run_time}"
            );
        }
        // Strings given to functions that are not ours are not read as helper arguments.
        for ok in [
            "'Mars/Olympus'.startsWith('Mars')",
            "context.time.getHours('Europe/Paris') < 18",
        ] {
            Expression::compile(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    /// The old way of resolving: whole variables only, fields selected by the interpreter.
    struct WholeVariablesOnly<'a, 's, 'r>(&'a Input<'s, 'r>);

    impl VariableResolver for WholeVariablesOnly<'_, '_, '_> {
        fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
            if variable.contains('.') {
                return None;
            }
            self.0.resolve(variable)
        }
    }

    #[test]
    fn fields_answered_by_name_evaluate_as_selected_from_whole_variables() {
        let requests = [
            serde_json::json!({
                "principal": {"sub": "alice", "roles": ["editor"],
                    "attributes": {"email": "a@x", "level": 3, "big": 18446744073709551615u64,
                        "ratio": 0.5, "on": true, "none": null,
                        "nested": {"x": 1, "y": {"z": "deep"}}, "list": [1, 2]}},
                "resource": {"type": "document", "id": "d1", "owner": "alice",
                    "attributes": {"title": "Plan", "tags": ["a"], "meta": {"k": "v"}}},
                "action": "edit",
                "context": {"ip": "::ffff:10.1.2.3", "time": "2026-11-23T10:00:00+01:00",
                    "tenant": "acme", "n": null, "deep": {"k": {"j": "v"}}, "list": [1]},
            }),
            // No owner, no ip, no time (the frozen clock), no attributes.
            serde_json::json!({
                "principal": {"sub": "bob"},
                "resource": {"type": "invoice"},
                "action": "pay",
            }),
        ];
        let expressions = [
            "principal.sub",
            "principal.roles",
            "'editor' in principal.roles",
            "principal.roles.exists(r, r == 'editor')",
            "principal.attributes",
            "size(principal.attributes)",
            "principal.attributes.email",
            "principal.attributes.level + 1",
            "principal.attributes.big",
            "principal.attributes.ratio",
            "principal.attributes.on",
            "principal.attributes.none",
            "principal.attributes.nested",
            "principal.attributes.nested.x",
            "principal.attributes.nested.y.z",
            "principal.attributes.nested.y.missing",
            "principal.attributes.list",
            "principal.attributes.missing",
            "principal.attributes.email.x",
            "has(principal.attributes.email)",
            "principal.sub.x",
            "principal.nosuch",
            "principal",
            "resource.type",
            "resource.id",
            "resource.owner",
            "resource.owner == principal.sub",
            "resource.attributes.title",
            "resource.attributes.tags",
            "resource.attributes.meta.k",
            "resource.attributes.nosuch",
            "resource.nosuch",
            "has(resource.owner)",
            "action",
            "action == 'edit'",
            "context.ip",
            "context.ip.x",
            "context.time",
            "context.time.x",
            "context.tenant",
            "context.n",
            "context.deep",
            "context.deep.k.j",
            "context.deep.k.missing",
            "context.list",
            "context.nosuch",
            "has(context.ip)",
            "ipInRange(context.ip, '10.0.0.0/8')",
            "timeBetween(context.time, '08:00', '19:00', 'Europe/Paris')",
            "context",
        ];
        let root = root_context();
        let frozen = DateTime::parse_from_rfc3339("2026-11-24T09:00:00Z").ok();
        for body in &requests {
            let r: crate::request::Request =
                serde_json::from_value(body.clone()).unwrap_or_else(|e| panic!("{e}"));
            for source in expressions {
                let program = Program::compile(source).unwrap_or_else(|e| panic!("{source}: {e}"));
                let shared = SharedInput::new(&r.principal, &r.context, frozen);
                let input = Input::new(&shared, &r.resource, &r.action);
                let by_name = program.execute(&input.scope(&root).cel);
                let shared = SharedInput::new(&r.principal, &r.context, frozen);
                let input = Input::new(&shared, &r.resource, &r.action);
                let whole = WholeVariablesOnly(&input);
                let mut scope = root.new_inner_scope();
                scope.set_variable_resolver(&whole);
                let selected = program.execute(&scope);
                // Values compared as values (map order is a hash order), errors by message.
                match (by_name, selected) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{source} on {body}"),
                    (Err(a), Err(b)) => {
                        assert_eq!(a.to_string(), b.to_string(), "{source} on {body}")
                    }
                    (a, b) => panic!("{source} on {body}: {a:?} / {b:?}"),
                }
            }
        }
    }

    #[test]
    fn request_fields_are_visible() {
        let ctx = serde_json::json!({"tenant": "acme"});
        assert_eq!(
            eval("resource.owner == principal.sub", ctx.clone()),
            Ok(true)
        );
        assert_eq!(
            eval(
                "'editor' in principal.roles && action == 'edit'",
                ctx.clone()
            ),
            Ok(true)
        );
        assert_eq!(eval("context.tenant == 'acme'", ctx.clone()), Ok(true));
        assert_eq!(
            eval("principal.roles.exists(r, r == 'editor')", ctx.clone()),
            Ok(true)
        );
        let not_bool = eval("principal.sub", ctx.clone()).unwrap_err();
        assert!(not_bool.contains("not a bool"), "{not_bool}");
        assert!(eval("resource.attributes.missing == 1", ctx).is_err());
    }

    #[test]
    fn unknown_names_and_syntax_fail_at_compile() {
        let e = Expression::compile("princpal.sub == 'x'").unwrap_err();
        assert!(e.contains("unknown variable `princpal`"), "{e}");
        let e = Expression::compile("ipInRanges(context.ip, '10.0.0.0/8')").unwrap_err();
        assert!(e.contains("unknown function `ipInRanges`"), "{e}");
        let e = Expression::compile("principal.sub ==").unwrap_err();
        assert!(e.contains("syntax error"), "{e}");
        for ok in [
            "principal.roles.all(r, r != 'banned')",
            "size(principal.roles) > 0 && principal.sub.startsWith('a')",
            "has(resource.attributes.public) && timestamp('2026-01-01T00:00:00Z') < context.time",
            "context.time.getHours('Europe/Paris') < 18",
            "[1, 2].map(x, x * 2).size() == 2",
        ] {
            Expression::compile(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }
}
