//! Rate-limit budgets in Redis, shared by replicas: one atomic script per
//! decision checks every applicable budget before consuming from any, on
//! Redis's clock (so replicas' clocks need not agree).

use crate::StoreError;
use crate::redis_store::Lazy;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// How long one decision may take before the store counts as down.
const OP_TIMEOUT: Duration = Duration::from_secs(2);

/// GCRA over every budget in KEYS, on Redis's clock, in microseconds.
/// ARGV holds (interval, tolerance) per key. Returns {0, 0} when all allow
/// (each budget's new arrival time stored with a TTL until it is full
/// again), else {index (1-based) of the budget that frees up last, wait}.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local news = {}
local worst, worst_i = -1, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local allowed_at = tat - tolerance
  if now >= allowed_at then
    news[i] = tat + interval
  elseif allowed_at - now > worst then
    worst, worst_i = allowed_at - now, i
  end
end
if worst >= 0 then return {worst_i, worst} end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', news[i]), 'PX', math.ceil((news[i] - now) / 1000) + 1)
end
return {0, 0}
"#;

/// One budget a request counts against.
#[derive(Debug, Clone)]
pub struct Budget {
    /// The budget's key (the limit's name and its scope).
    pub key: String,
    /// Time one request's share takes to refill.
    pub interval: Duration,
    /// How many requests may come at once.
    pub burst: u32,
}

/// Shared budgets in one Redis.
pub struct RedisLimits {
    lazy: Arc<Lazy>,
    script: redis::Script,
    prefix: String,
}

impl RedisLimits {
    /// Budgets in the Redis at `url`, under keys starting with `prefix`.
    /// Connects on first use (and again after an outage).
    pub fn open(url: &str, prefix: &str) -> Result<RedisLimits, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError::Unavailable {
            store: "limits (redis)",
            reason: format!("bad redis_url: {e}"),
        })?;
        Ok(RedisLimits {
            lazy: Arc::new(Lazy {
                client,
                conn: Mutex::new(None),
            }),
            script: redis::Script::new(SCRIPT),
            prefix: prefix.to_string(),
        })
    }

    /// Consumes from every budget if all allow; otherwise from none, and
    /// says which one (its index) frees up last and when.
    pub async fn check(
        &self,
        budgets: &[Budget],
    ) -> Result<Result<(), (usize, Duration)>, StoreError> {
        let down = |reason: String| StoreError::Unavailable {
            store: "limits (redis)",
            reason,
        };
        let mut conn = self.lazy.get().await.map_err(|e| down(e.to_string()))?;
        let mut inv = self.script.prepare_invoke();
        for b in budgets {
            let interval = (b.interval.as_micros() as u64).max(1);
            inv.key(format!("{}{}", self.prefix, b.key))
                .arg(interval)
                .arg(interval.saturating_mul(u64::from(b.burst.max(1)) - 1));
        }
        let (i, wait): (usize, u64) =
            match tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut conn)).await {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => {
                    // A broken connection is made again on the next decision.
                    *self.lazy.conn.lock().await = None;
                    return Err(down(e.to_string()));
                }
                Err(_) => {
                    *self.lazy.conn.lock().await = None;
                    return Err(down("the decision timed out".into()));
                }
            };
        Ok(if i == 0 {
            Ok(())
        } else {
            Err((i - 1, Duration::from_micros(wait)))
        })
    }
}
