//! What a migration will do: the plan, its approval, review pages, browsing.

use super::*;

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct PlanQuery {
    /// skip, overwrite, newer or rename (skip if not given).
    #[serde(default = "default_policy")]
    policy: String,
    /// leave or quarantine (leave if not given).
    #[serde(default = "default_extras")]
    extras: String,
}

fn default_policy() -> String {
    "skip".into()
}

fn default_extras() -> String {
    "leave".into()
}

/// What an approval with this policy would cover, and its hash.
#[utoipa::path(get, path = "/api/migrations/{name}/plan", tag = "review", params(Name, PlanQuery),
    responses((status = 200, body = PlanPreview), (status = 400, body = ErrorBody)))]
pub(super) async fn plan(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<PlanQuery>,
) -> ApiResult<Response> {
    let (policy, extras) =
        crate::jobs::policy(&q.policy, &q.extras).map_err(ApiError::bad_request)?;
    blocking(move || {
        let m = reg.open(&name)?;
        let preview = m.handle().preview_plan(policy, extras)?;
        Ok(Json(preview).into_response())
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct Approve {
    #[serde(default = "default_policy")]
    policy: String,
    #[serde(default = "default_extras")]
    extras: String,
    /// The hash of the plan the approver was shown (from `plan`).
    plan_hash: String,
    #[serde(default)]
    approved_by: Option<String>,
}

/// Approves exactly the plan shown: refused (409) when the plan has
/// changed since, or a job runs.
#[utoipa::path(post, path = "/api/migrations/{name}/approve", tag = "review", params(Name),
    request_body = Approve,
    responses((status = 200, body = treeshift_lifecycle::ApprovalReport),
        (status = 409, description = "The plan changed since it was shown, or a job runs", body = ErrorBody)))]
pub(super) async fn approve(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    JsonBody(a): JsonBody<Approve>,
) -> ApiResult<Response> {
    let (policy, extras) =
        crate::jobs::policy(&a.policy, &a.extras).map_err(ApiError::bad_request)?;
    blocking(move || {
        let slot = reg.slot(&name)?;
        reg.idle(&slot)?;
        let m = reg.migration(&slot)?;
        let by = a.approved_by.unwrap_or_else(|| "api".to_string());
        // The lifecycle logs the approval, in the migration's span.
        let report = crate::migration_span(&slot.name)
            .in_scope(|| m.approve_seen(policy, extras, &by, &a.plan_hash))?;
        Ok(Json(report).into_response())
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct ReviewQuery {
    /// A comparison or copy status, `all` (what needs a look), `changes`,
    /// `failed`, `copy-failed` or `mismatch`.
    #[serde(default = "default_status")]
    status: String,
    /// The previous page's `next`.
    after: Option<String>,
    /// Only at or under this path.
    prefix: Option<String>,
    min_size: Option<u64>,
    max_size: Option<u64>,
    /// Only names holding this text.
    search: Option<String>,
    /// Rows a page (1,000 if not given; 5,000 at most).
    limit: Option<usize>,
}

/// A page of review rows.
#[derive(serde::Serialize, ToSchema)]
struct ReviewPage {
    items: Vec<ReviewRow>,
    /// The cursor of the next page, if there may be one.
    next: Option<String>,
}

#[derive(serde::Serialize, ToSchema)]
struct ReviewRow {
    #[schema(value_type = String)]
    side: Side,
    /// The path, escaped for display where it is not UTF-8.
    path: String,
    kind: &'static str,
    size: u64,
    mtime_ns: Option<i64>,
    status: String,
    reason: Option<String>,
}

fn default_status() -> String {
    "all".into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An opaque cursor: the side and the raw path of the last item, in hex
/// (a path need not be UTF-8).
fn cursor(item: &ReviewItem) -> String {
    let side = if item.side == Side::Src { "s" } else { "d" };
    format!("{side}{}", hex(item.path.as_bytes()))
}

fn parse_cursor(text: &str) -> Option<(Side, RelPath)> {
    let side = match text.as_bytes().first()? {
        b's' => Side::Src,
        b'd' => Side::Dst,
        _ => return None,
    };
    Some((side, RelPath::from_bytes(unhex(&text[1..])?)))
}

/// The review's status; `changes` is what changed since the last pass.
fn select(status: &str) -> Result<ReviewSelect, ApiError> {
    match status {
        "changes" => Ok(ReviewSelect::Changes),
        other => other.parse().map_err(ApiError::bad_request),
    }
}

/// Review rows by status and filters, a page at a time (keyset paging by
/// an opaque cursor).
#[utoipa::path(get, path = "/api/migrations/{name}/review", tag = "review", params(Name, ReviewQuery),
    responses((status = 200, body = ReviewPage), (status = 400, body = ErrorBody)))]
pub(super) async fn review(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<ReviewQuery>,
) -> ApiResult<Response> {
    let select = select(&q.status)?;
    let after = match q.after.as_deref() {
        Some(c) => {
            Some(parse_cursor(c).ok_or_else(|| ApiError::bad_request("a malformed cursor"))?)
        }
        None => None,
    };
    let filter = ReviewFilter {
        prefix: q.prefix.as_deref().map(RelPath::from_typed),
        min_size: q.min_size,
        max_size: q.max_size,
        search: q.search,
    };
    let limit = page_limit(q.limit);
    blocking(move || {
        let m = reg.open(&name)?;
        let items = m
            .handle()
            .committed()
            .review_page(select, after, filter, limit)?;
        let next = (items.len() == limit)
            .then(|| items.last().map(cursor))
            .flatten();
        let items = items
            .into_iter()
            .map(|i| ReviewRow {
                side: i.side,
                path: display_bytes(i.path.as_bytes()),
                kind: i.kind.as_str(),
                size: i.size,
                mtime_ns: i.mtime_ns,
                status: i.status,
                reason: i.reason,
            })
            .collect();
        Ok(Json(ReviewPage { items, next }).into_response())
    })
    .await
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct BrowseQuery {
    /// The folder (the root if not given).
    #[serde(default)]
    path: String,
    /// The previous page's `next`.
    after: Option<String>,
    /// Children a page (1,000 if not given; 5,000 at most).
    limit: Option<usize>,
}

/// A page of one folder's children.
#[derive(serde::Serialize, ToSchema)]
struct BrowsePage {
    path: String,
    children: Vec<BrowseRow>,
    /// The cursor of the next page, if there may be one.
    next: Option<String>,
}

#[derive(serde::Serialize, ToSchema)]
struct BrowseRow {
    #[schema(value_type = String)]
    side: Side,
    path: String,
    kind: &'static str,
    size: u64,
    status: Option<String>,
    /// Items and bytes below a folder, by status.
    below: Vec<BelowStatus>,
}

/// One folder's children (the source's, and the destination's extras),
/// each with its status and, for a folder, the items and bytes below it
/// by status: what a treemap of the bytes to copy is drawn from.
#[utoipa::path(get, path = "/api/migrations/{name}/browse", tag = "review", params(Name, BrowseQuery),
    responses((status = 200, body = BrowsePage), (status = 400, body = ErrorBody)))]
pub(super) async fn browse(
    State(reg): State<Shared>,
    PathArgs(name): PathArgs<String>,
    QueryArgs(q): QueryArgs<BrowseQuery>,
) -> ApiResult<Response> {
    let folder = RelPath::from_typed(&q.path);
    let after = match q.after.as_deref() {
        Some(c) => {
            Some(RelPath::from_bytes(unhex(c).ok_or_else(|| {
                ApiError::bad_request("a malformed cursor")
            })?))
        }
        None => None,
    };
    let limit = page_limit(q.limit);
    blocking(move || {
        let m = reg.open(&name)?;
        let children = m
            .handle()
            .committed()
            .browse(folder.clone(), after, limit)?;
        let next = (children.len() == limit)
            .then(|| children.last().map(|c| hex(c.path.as_bytes())))
            .flatten();
        let children = children
            .into_iter()
            .map(|c| BrowseRow {
                side: c.side,
                path: display_bytes(c.path.as_bytes()),
                kind: c.kind.as_str(),
                size: c.size,
                status: c.status,
                below: c.below,
            })
            .collect();
        Ok(Json(BrowsePage {
            path: display_bytes(folder.as_bytes()),
            children,
            next,
        })
        .into_response())
    })
    .await
}
