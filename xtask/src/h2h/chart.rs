//! h2h.png: per mode, receiver-side CPU per packet (stacked softirq and server thread) over the
//! flood packets each main setup delivered.
use std::{fs, path::Path};

use anyhow::{Context as _, Result, anyhow};
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    context::{Context, Mode},
    measurement::{Summary, find},
    report::thousands,
    setups::Setup,
};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

const SOFTIRQ_COLOR: RGBColor = RGBColor(0x4c, 0x72, 0xb0);
const SERVER_COLOR: RGBColor = RGBColor(0xdd, 0x84, 0x52);
const DELIVERED_COLOR: RGBColor = RGBColor(0x55, 0xa8, 0x68);

fn bar<Y: Copy>(i: u32, from: Y, to: Y, color: RGBColor) -> Rectangle<(SegmentValue<u32>, Y)> {
    let mut rect = Rectangle::new(
        [
            (SegmentValue::Exact(i), from),
            (SegmentValue::Exact(i + 1), to),
        ],
        color.filled(),
    );
    rect.set_margin(0, 0, 18, 18);
    rect
}

fn setup_label(v: &SegmentValue<u32>) -> String {
    match v {
        SegmentValue::CenterOf(i) => Setup::ALL
            .get(*i as usize)
            .map_or_else(String::new, |s| s.name().to_owned()),
        _ => String::new(),
    }
}

pub(super) fn draw_chart(path: &Path, summaries: &[Summary], ctx: &Context) -> Result<()> {
    let font = fs::read(FONT).with_context(|| {
        format!("reading {FONT} (install fonts-dejavu-core: scripts/setup-toolchain.sh)")
    })?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow!("{FONT} is not a usable TrueType font"))?;

    let root = BitMapBackend::new(path, (1600, 1040)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(44);
    title.draw_text(
        &format!(
            "A REGISTER flood from one source through veth ({} frames / {} socket packets per \
             run), median of the runs (cargo xtask h2h)",
            thousands(u64::from(ctx.frame_packets)),
            thousands(u64::from(ctx.socket_packets))
        ),
        &TextStyle::from(("sans-serif", 20).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
        (800, 24),
    )?;
    // One column per mode: CPU on top, delivered packets below; one CPU scale for both.
    let cpu_top = summaries
        .iter()
        .map(|s| s.total)
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.15;
    let (top, bottom) = body.split_vertically(560);
    let columns = [top.split_horizontally(800), bottom.split_horizontally(800)];
    for (i, mode) in Mode::CHARTED.into_iter().enumerate() {
        let of_mode = |setups: &[Setup]| -> Vec<&Summary> {
            setups
                .iter()
                .map(|&setup| find(summaries, mode, setup))
                .collect()
        };
        let (cpu_area, delivered_area) = if i == 0 {
            (&columns[0].0, &columns[1].0)
        } else {
            (&columns[0].1, &columns[1].1)
        };
        draw_cpu_panel(cpu_area, &of_mode(&Setup::ALL), mode, cpu_top)?;
        draw_delivered_panel(
            delivered_area,
            &of_mode(&Setup::MAIN),
            mode,
            mode.packets(ctx),
        )?;
    }
    root.present()?;
    Ok(())
}

fn draw_cpu_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    summaries: &[&Summary],
    mode: Mode,
    top: f64,
) -> Result<()> {
    let n = summaries.len() as u32;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} mode: receiver-side CPU per packet, ns", mode.name()),
            ("sans-serif", 17),
        )
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(72)
        // A u32 range includes its end: 0..n-1 gives exactly n segments.
        .build_cartesian_2d((0u32..n - 1).into_segmented(), 0f64..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&setup_label)
        .x_label_style(("sans-serif", 13))
        .y_desc("CPU ns per packet received")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .y_label_style(("sans-serif", 13))
        .draw()?;
    chart
        .draw_series(
            summaries
                .iter()
                .enumerate()
                .map(|(i, s)| bar(i as u32, 0.0, s.softirq, SOFTIRQ_COLOR)),
        )?
        .label("kernel softirq (machine-wide)")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], SOFTIRQ_COLOR.filled()));
    chart
        .draw_series(
            summaries
                .iter()
                .enumerate()
                .map(|(i, s)| bar(i as u32, s.softirq, s.softirq + s.receiver, SERVER_COLOR)),
        )?
        .label("server thread reading the socket")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 12, y + 6)], SERVER_COLOR.filled()));
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(summaries.iter().enumerate().map(|(i, s)| {
        Text::new(
            format!("{:.0}", s.total),
            (SegmentValue::CenterOf(i as u32), s.total + top * 0.01),
            label_style.clone(),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn draw_delivered_panel(
    area: &DrawingArea<BitMapBackend, Shift>,
    summaries: &[&Summary],
    mode: Mode,
    packets: u32,
) -> Result<()> {
    let n = summaries.len() as u32;
    let top = f64::from(packets) * 4.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{} mode: flood packets that reached the server socket (log scale)",
                mode.name()
            ),
            ("sans-serif", 17),
        )
        .margin(14)
        .x_label_area_size(36)
        .y_label_area_size(80)
        .build_cartesian_2d((0u32..n - 1).into_segmented(), (1f64..top).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n as usize)
        .x_label_formatter(&setup_label)
        .x_label_style(("sans-serif", 15))
        .y_desc("packets delivered")
        .y_label_formatter(&|v| thousands(*v as u64))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .y_label_style(("sans-serif", 13))
        .draw()?;
    chart.draw_series(
        summaries
            .iter()
            .enumerate()
            .map(|(i, s)| bar(i as u32, 1.0, s.flood_delivered.max(1.0), DELIVERED_COLOR)),
    )?;
    let label_style =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series(summaries.iter().enumerate().map(|(i, s)| {
        Text::new(
            format!(
                "{} of {}",
                thousands(s.flood_delivered as u64),
                thousands(u64::from(packets))
            ),
            (
                SegmentValue::CenterOf(i as u32),
                s.flood_delivered.max(1.0) * 1.25,
            ),
            label_style.clone(),
        )
    }))?;
    Ok(())
}
