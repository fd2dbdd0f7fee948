//! Jobs: start, stop, their counts over time, their progress as events.

use super::*;

/// Starts a job: `discover`, `copy`, `verify` or `retry`. A stopped or
/// interrupted job goes on where it stood.
#[utoipa::path(post, path = "/api/migrations/{name}/jobs/{op}", tag = "jobs",
    params(Name, ("op" = String, Path, description = "discover, copy, verify or retry")),
    request_body = JobOptions,
    responses((status = 202, body = JobView), (status = 404, body = ErrorBody),
        (status = 409, description = "A job runs, or the phase does not allow it", body = ErrorBody)))]
pub(super) async fn start(
    State(reg): State<Shared>,
    PathArgs((name, op)): PathArgs<(String, String)>,
    JsonBody(options): JsonBody<JobOptions>,
) -> ApiResult<Response> {
    let op = Op::parse(&op).ok_or_else(|| {
        ApiError::not_found(format!("no job '{op}': discover, copy, verify or retry"))
    })?;
    blocking(move || {
        let slot = reg.slot(&name)?;
        let view = reg.start(&slot, op, options)?;
        Ok((StatusCode::ACCEPTED, Json(view)).into_response())
    })
    .await
}

/// Stops the running job where it stands; starting it again resumes.
#[utoipa::path(post, path = "/api/migrations/{name}/stop", tag = "jobs", params(Name),
    responses((status = 202, body = JobView), (status = 409, body = ErrorBody)))]
pub(super) async fn stop(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<Response> {
    blocking(move || {
        let slot = reg.slot(&name)?;
        let job = slot
            .job()
            .filter(|j| j.is_running())
            .ok_or_else(|| ApiError::conflict(format!("{name} runs no job")))?;
        job.cancel.cancel();
        Ok((StatusCode::ACCEPTED, Json(job.view())).into_response())
    })
    .await
}

/// The counts of the migration's last job over time (a sample a second
/// at first, thinned as it runs long), for a chart of its throughput.
#[utoipa::path(get, path = "/api/migrations/{name}/history", tag = "jobs", params(Name),
    responses((status = 200, body = crate::jobs::JobHistory), (status = 404, body = ErrorBody)))]
pub(super) async fn history(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<Json<crate::jobs::JobHistory>> {
    let slot = reg.slot(&name)?;
    let job = slot
        .job()
        .ok_or_else(|| ApiError::not_found(format!("{name} has run no job in this server")))?;
    Ok(Json(job.history()))
}

/// Progress of the migration's job as server-sent events: `progress`
/// every half second while it runs, then `done` with its outcome (or one
/// `idle` when no job ever ran).
#[utoipa::path(get, path = "/api/migrations/{name}/events", tag = "jobs", params(Name),
    responses((status = 200, description = "Server-sent events: `progress` (a JobView as JSON) every half second while the job runs, then `done` (a JobView with its outcome); or one `idle`", content_type = "text/event-stream")))]
pub(super) async fn events(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<Response> {
    let slot = reg.slot(&name)?;
    let job = slot.job();
    let stream = futures::stream::unfold((job, false), |(job, ended)| async move {
        if ended {
            return None;
        }
        let Some(job) = job else {
            let event = Event::default().event("idle").data("{}");
            return Some((Ok::<_, std::convert::Infallible>(event), (None, true)));
        };
        let view = job.view();
        let data = serde_json::to_string(&view).unwrap_or_default();
        if view.running {
            tokio::time::sleep(EVENT_EVERY).await;
            let event = Event::default().event("progress").data(data);
            Some((Ok(event), (Some(job), false)))
        } else {
            let event = Event::default().event("done").data(data);
            Some((Ok(event), (Some(job), true)))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
