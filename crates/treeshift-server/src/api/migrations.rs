//! The migrations under the folder: list, create, status.

use super::*;

#[derive(serde::Serialize, ToSchema)]
pub(super) struct Listed {
    name: String,
    phase: Option<Phase>,
    job: Option<JobView>,
    interrupted: bool,
    error: Option<String>,
}

/// Whether a migration was left in the middle of a run by a process that
/// is gone (a server killed or restarted): its phase says a walk or a
/// copy was going on, and no job of this server ran it.
fn interrupted(phase: Phase, job: &Option<JobView>) -> bool {
    matches!(phase, Phase::Discovering | Phase::Copying) && job.is_none()
}

/// Every migration under the folder, with its phase and its job.
#[utoipa::path(get, path = "/api/migrations", tag = "migrations",
    responses((status = 200, body = Vec<Listed>)))]
pub(super) async fn list(State(reg): State<Shared>) -> ApiResult<Json<Vec<Listed>>> {
    blocking(move || {
        let mut out = Vec::new();
        for name in reg.names()? {
            let slot = reg.slot(&name)?;
            let job = slot.job().map(|j| j.view());
            let phase = reg
                .migration(&slot)
                .and_then(|m| m.handle().committed().phase().map_err(ApiError::from));
            out.push(match phase {
                Ok(phase) => Listed {
                    name,
                    phase: Some(phase),
                    interrupted: interrupted(phase, &job),
                    job,
                    error: None,
                },
                Err(e) => Listed {
                    name,
                    phase: None,
                    job,
                    interrupted: false,
                    error: Some(e.message),
                },
            });
        }
        Ok(Json(out))
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Create {
    name: String,
    src: String,
    dst: String,
    #[serde(default)]
    filter: FilterSpec,
    #[serde(default)]
    dst_case_insensitive: bool,
    #[serde(default)]
    keep_owners: bool,
    #[serde(default)]
    keep_xattrs: bool,
    #[serde(default)]
    keep_acls: bool,
    #[serde(default)]
    keep_hard_links: bool,
    /// Each side's secrets by the names its service's tools use (e.g.
    /// `AWS_SECRET_ACCESS_KEY`), sealed into the state file and never
    /// shown again; the server needs a key for that. A side without
    /// any takes them from the server's environment.
    #[serde(default)]
    secrets: GivenSecrets,
    /// A PostgreSQL database made for this migration
    /// (`postgres://USER@HOST:PORT/DB`) to hold its state, so worker
    /// processes on other hosts can share it; by default a state file in
    /// the server's folder.
    #[serde(default)]
    state: Option<String>,
}

/// Secrets given with a new migration, by side.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct GivenSecrets {
    #[serde(default)]
    src: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    dst: std::collections::BTreeMap<String, String>,
}

/// Where one side's secrets come from: those given, else the
/// environment. The values go straight into zeroed-on-drop secrets.
fn secret_source(given: std::collections::BTreeMap<String, String>) -> SecretSource {
    if given.is_empty() {
        return SecretSource::Environment;
    }
    SecretSource::Given(
        given
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value)))
            .collect(),
    )
}

#[derive(serde::Serialize, ToSchema)]
struct Created {
    name: String,
}

/// Records a new migration (its state file); nothing is walked yet.
#[utoipa::path(post, path = "/api/migrations", tag = "migrations", request_body = Create,
    responses((status = 201, body = Created), (status = 400, body = ErrorBody),
        (status = 409, description = "A migration of that name exists", body = ErrorBody)))]
pub(super) async fn create(
    State(reg): State<Shared>,
    JsonBody(c): JsonBody<Create>,
) -> ApiResult<Response> {
    blocking(move || {
        let slot = reg.slot(&c.name)?;
        let request = DiscoveryRequest {
            state: Default::default(),
            src: c.src,
            dst: c.dst,
            secrets: [secret_source(c.secrets.src), secret_source(c.secrets.dst)],
            filter: c.filter,
            dst_case_insensitive: c.dst_case_insensitive,
            keep: Keep {
                modes: true,
                owners: if c.keep_owners {
                    Owners::Keep
                } else {
                    Owners::Ignore
                },
                xattrs: c.keep_xattrs,
                acls: c.keep_acls,
                hard_links: c.keep_hard_links,
            },
        };
        reg.create(&slot, request, c.state)?;
        let name = slot.name.clone();
        Ok((StatusCode::CREATED, Json(Created { name })).into_response())
    })
    .await
}

#[derive(serde::Serialize, ToSchema)]
pub(super) struct StatusView {
    #[serde(flatten)]
    status: StatusReport,
    job: Option<JobView>,
    interrupted: bool,
}

/// The migration's status: counts, phase, approval, copy, verify,
/// errors, rounds; its job, and whether a run was interrupted.
#[utoipa::path(get, path = "/api/migrations/{name}", tag = "migrations", params(Name),
    responses((status = 200, body = StatusView), (status = 404, body = ErrorBody)))]
pub(super) async fn status(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
) -> ApiResult<Json<StatusView>> {
    blocking(move || {
        let slot = reg.slot(&name)?;
        let m = reg.migration(&slot)?;
        // The job first: a job seen ended has recorded all it did, so the
        // status read after it shows it.
        let job = slot.job().map(|j| j.view());
        let status = m.status()?;
        Ok(Json(StatusView {
            interrupted: interrupted(status.phase, &job),
            status,
            job,
        }))
    })
    .await
}
