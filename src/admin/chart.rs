//! The overview's charts, laid out here and drawn by the template as inline SVG (no script,
//! no external asset): one value per day, bars on a labelled grid.

/// Seconds in a day; days are UTC days numbered from the Unix epoch.
pub const DAY_SECS: i64 = 86_400;

pub const WIDTH: f64 = 720.0;
pub const HEIGHT: f64 = 240.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 36.0;

/// A label on an axis at `pos` (x for the day axis, y for the count axis).
pub struct Tick {
    pub pos: f64,
    pub label: String,
}

pub struct Bar {
    pub x: f64,
    pub y: f64,
    pub width: f64,
    pub height: f64,
    /// The tooltip and accessible text: day and count.
    pub title: String,
}

pub struct Chart {
    pub title: &'static str,
    /// A CSS class for the bars (the template colours series apart).
    pub class: &'static str,
    pub width: f64,
    pub height: f64,
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub bars: Vec<Bar>,
    pub total: i64,
}

/// "MM-DD" of a day number.
pub fn day_label(day: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs((day.max(0) * DAY_SECS) as u64);
    humantime::format_rfc3339_seconds(at).to_string()[5..10].to_string()
}

/// Rounded to a tenth, so the SVG reads `52.8`, not `52.800000000000004`.
fn r1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A round step so that about four steps cover `max` (1, 2 or 5 times a power of ten).
fn nice_step(max: i64) -> i64 {
    let raw = (max.max(1) as f64 / 4.0).max(1.0);
    let magnitude = 10f64.powi(raw.log10().floor() as i32);
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(raw);
    step.round().max(1.0) as i64
}

/// A bar chart of `values`, one per day, oldest first (`first_day` is the first one's number).
pub fn build(title: &'static str, first_day: i64, values: &[i64]) -> Chart {
    let (left, right, top, bottom) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let max = values.iter().copied().max().unwrap_or(0);
    let step = nice_step(max);
    let top_value = ((max + step - 1) / step).max(1) * step;
    let y_of = |v: i64| bottom - (v as f64 / top_value as f64) * (bottom - top);
    let y_ticks = (0..=top_value / step)
        .map(|i| Tick { pos: r1(y_of(i * step)), label: (i * step).to_string() })
        .collect();
    let slot = (right - left) / values.len().max(1) as f64;
    let bars = values
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let y = y_of(v);
            Bar {
                x: r1(left + i as f64 * slot + slot * 0.15),
                y: r1(y),
                width: r1(slot * 0.7),
                height: r1(bottom - y),
                title: format!("{}: {v}", day_label(first_day + i as i64)),
            }
        })
        .collect();
    // A label every 5 days, and on the last day (today).
    let x_ticks = (0..values.len())
        .filter(|i| (values.len() - 1 - i).is_multiple_of(5))
        .map(|i| Tick { pos: r1(left + (i as f64 + 0.5) * slot), label: day_label(first_day + i as i64) })
        .collect();
    Chart {
        title,
        class: "",
        width: WIDTH,
        height: HEIGHT,
        left,
        right,
        top,
        bottom,
        y_ticks,
        x_ticks,
        bars,
        total: values.iter().sum(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_a_round_top_and_the_axis_is_labelled() {
        let mut values = vec![0; 30];
        values[29] = 37;
        values[0] = 10;
        let chart = build("Sign-ins", 20_000, &values);
        assert_eq!(chart.bars.len(), 30);
        assert_eq!(chart.total, 47);
        let labels: Vec<&str> = chart.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "10", "20", "30", "40"]);
        // The tallest bar reaches 37/40 of the plot; an empty day has no height.
        let plot = chart.bottom - chart.top;
        assert!((chart.bars[29].height - plot * 37.0 / 40.0).abs() <= 0.05);
        assert_eq!(chart.bars[1].height, 0.0);
        assert_eq!(chart.x_ticks.last().unwrap().label, day_label(20_029));
        assert_eq!(chart.x_ticks.len(), 6);
    }

    #[test]
    fn days_are_labelled_month_and_day() {
        // 2026-11-30 is day 20_787 since the epoch.
        assert_eq!(day_label(20_787), "11-30");
        assert_eq!(nice_step(0), 1);
        assert_eq!(nice_step(7), 2);
        assert_eq!(nice_step(1000), 500);
    }
}
