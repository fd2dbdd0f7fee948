//! The migration's log records: by page, and as events.

use super::*;

/// The least severe level of log records asked for (`INFO` if not).
fn log_level(asked: Option<String>) -> ApiResult<String> {
    let level = asked.unwrap_or_else(|| "INFO".into()).to_uppercase();
    match ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&level.as_str()) {
        true => Ok(level),
        false => Err(ApiError::bad_request(format!("unknown level '{level}'"))),
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct LogsQuery {
    /// Records after this `seq` (the previous page's `next`).
    after: Option<i64>,
    /// Records a page (1,000 if not given; 5,000 at most).
    limit: Option<usize>,
    /// The least severe level: ERROR, WARN, INFO (if not given), DEBUG, TRACE.
    level: Option<String>,
}

/// A page of log records.
#[derive(serde::Serialize, ToSchema)]
struct LogsPage {
    entries: Vec<LogEntry>,
    next: Option<i64>,
}

/// The migration's log records, a page at a time.
#[utoipa::path(get, path = "/api/migrations/{name}/logs", tag = "logs", params(Name, LogsQuery),
    responses((status = 200, body = LogsPage), (status = 400, body = ErrorBody)))]
pub(super) async fn logs(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<LogsQuery>,
) -> ApiResult<Response> {
    let level = log_level(q.level)?;
    let limit = page_limit(q.limit);
    blocking(move || {
        let m = reg.open(&name)?;
        let entries = m
            .handle()
            .committed()
            .logs(q.after.unwrap_or(0), &level, limit)?;
        let next = (entries.len() == limit)
            .then(|| entries.last().map(|e| e.seq))
            .flatten();
        Ok(Json(LogsPage { entries, next }).into_response())
    })
    .await
}

/// The migration's log records as server-sent events (`log`, one record
/// each, JSON), from after `after` (its `seq`) and then as they are
/// written, checked every half second, until the client goes away.
#[utoipa::path(get, path = "/api/migrations/{name}/logs/events", tag = "logs", params(Name, LogsQuery),
    responses((status = 200, description = "Server-sent events `log`, each one record (LogEntry) as JSON", content_type = "text/event-stream")))]
pub(super) async fn log_events(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<LogsQuery>,
) -> ApiResult<Response> {
    let level = log_level(q.level)?;
    let m = {
        let reg = reg.clone();
        blocking(move || reg.open(&name)).await?
    };
    let start = (q.after.unwrap_or(0), Vec::new());
    let stream = futures::stream::unfold(start, move |(mut after, mut queued)| {
        let (m, level) = (m.clone(), level.clone());
        async move {
            loop {
                if let Some(entry) = queued.pop() {
                    let entry: treeshift_store::LogEntry = entry;
                    let data = serde_json::to_string(&entry).unwrap_or_default();
                    let event = Event::default()
                        .event("log")
                        .id(entry.seq.to_string())
                        .data(data);
                    return Some((Ok::<_, std::convert::Infallible>(event), (after, queued)));
                }
                let (m2, level2) = (m.clone(), level.clone());
                let read = tokio::task::spawn_blocking(move || {
                    m2.handle().committed().logs(after, &level2, MAX_PAGE)
                })
                .await;
                match read {
                    Ok(Ok(batch)) if !batch.is_empty() => {
                        after = batch.last().map_or(after, |e| e.seq);
                        queued = batch;
                        queued.reverse();
                    }
                    Ok(Ok(_)) => tokio::time::sleep(EVENT_EVERY).await,
                    // The store stopped (the server is closing): end.
                    _ => return None,
                }
            }
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
