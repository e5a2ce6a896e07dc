//! The in-process store: sessions end with the process.

use crate::{Event, LogBounds, SessionRecord, StoreError, StreamMeta, now_ms};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

type Key = (String, String);

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, (SessionRecord, u64)>,
    logs: HashMap<Key, VecDeque<(u64, u64, String)>>,
    streams: HashMap<Key, StreamMeta>,
}

pub struct MemoryStore {
    bounds: LogBounds,
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub(crate) fn new(bounds: LogBounds) -> Self {
        MemoryStore {
            bounds,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) async fn put(&self, rec: &SessionRecord) -> Result<(), StoreError> {
        self.inner
            .lock()
            .unwrap()
            .sessions
            .insert(rec.id.clone(), (rec.clone(), now_ms()));
        Ok(())
    }

    pub(crate) async fn get(&self, id: &str) -> Result<Option<SessionRecord>, StoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .sessions
            .get(id)
            .map(|(r, _)| r.clone()))
    }

    pub(crate) async fn touch(&self, id: &str) -> Result<bool, StoreError> {
        Ok(match self.inner.lock().unwrap().sessions.get_mut(id) {
            Some((_, t)) => {
                *t = now_ms();
                true
            }
            None => false,
        })
    }

    pub(crate) async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let mut g = self.inner.lock().unwrap();
        g.logs.retain(|(s, _), _| s != id);
        g.streams.retain(|(s, _), _| s != id);
        Ok(g.sessions.remove(id).is_some())
    }

    pub(crate) async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.inner.lock().unwrap().sessions.len())
    }

    pub(crate) async fn evict_idle(&self, idle: Duration) -> Result<Vec<String>, StoreError> {
        let cutoff = now_ms().saturating_sub(idle.as_millis() as u64);
        let ids: Vec<String> = {
            let g = self.inner.lock().unwrap();
            g.sessions
                .iter()
                .filter(|(_, (_, t))| *t < cutoff)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in &ids {
            self.delete(id).await?;
        }
        Ok(ids)
    }

    pub(crate) async fn append(
        &self,
        session: &str,
        stream: &str,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let oldest = now.saturating_sub(self.bounds.max_age.as_millis() as u64);
        let mut g = self.inner.lock().unwrap();
        let log = g.logs.entry((session.into(), stream.into())).or_default();
        for e in events {
            log.push_back((e.seq, now, e.data.clone()));
        }
        while log.len() > self.bounds.max_events || log.front().is_some_and(|(_, t, _)| *t < oldest)
        {
            log.pop_front();
        }
        Ok(())
    }

    pub(crate) async fn events_after(
        &self,
        session: &str,
        stream: &str,
        after: u64,
    ) -> Result<Vec<Event>, StoreError> {
        let oldest = now_ms().saturating_sub(self.bounds.max_age.as_millis() as u64);
        let g = self.inner.lock().unwrap();
        Ok(g.logs
            .get(&(session.to_string(), stream.to_string()))
            .map(|log| {
                log.iter()
                    .filter(|(seq, t, _)| *seq > after && *t >= oldest)
                    .map(|(seq, _, d)| Event {
                        seq: *seq,
                        data: d.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    pub(crate) async fn set_stream(
        &self,
        session: &str,
        stream: &str,
        meta: &StreamMeta,
    ) -> Result<(), StoreError> {
        self.inner
            .lock()
            .unwrap()
            .streams
            .insert((session.into(), stream.into()), meta.clone());
        Ok(())
    }

    pub(crate) async fn get_stream(
        &self,
        session: &str,
        stream: &str,
    ) -> Result<Option<StreamMeta>, StoreError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .streams
            .get(&(session.to_string(), stream.to_string()))
            .cloned())
    }

    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
