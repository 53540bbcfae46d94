//! The overview, `/admin`: how many users and live devices, and the charts of recent days.

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use askama::Template;

use super::{failed, html, AdminPage, Layout};
use crate::admin::{chart, directory};
use crate::state::AppState;

#[derive(Template)]
#[template(path = "admin/overview.html")]
struct OverviewPage {
    layout: Layout,
    users: i64,
    live_devices: i64,
    sign_ins_today: i64,
    charts: Vec<chart::Chart>,
}

#[utoipa::path(
    get,
    path = "/admin",
    tag = "admin",
    summary = "Overview: counts and 30 days of sign-ins and refresh-token reuse (server-side SVG)",
    responses(super::super::openapi::answers::AdminPage)
)]
pub async fn page(state: web::Data<AppState>, AdminPage(session): AdminPage) -> HttpResponse {
    let figures = match state.db.run(|conn| directory::overview(conn, crate::clock::now())).await {
        Ok(figures) => figures,
        Err(e) => return failed(e),
    };
    let sign_ins = chart::build("Sign-ins", figures.first_day, &figures.sign_ins);
    let mut reuse = chart::build("Refresh-token reuse detected", figures.first_day, &figures.reuse);
    reuse.class = "reuse";
    let page = OverviewPage {
        layout: Layout::of(&session, "overview"),
        users: figures.users,
        live_devices: figures.live_devices,
        sign_ins_today: figures.sign_ins_today,
        charts: vec![sign_ins, reuse],
    };
    html(StatusCode::OK, page.render())
}
