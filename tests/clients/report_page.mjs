// Opens `meridian report --html`'s page in headless Chromium (Debian's, driven by
// playwright-core) from a file, with the network off: the page must draw its charts by itself.
// Takes a screenshot of the page (SHOT) and of each chart, and checks from the pixels that
// every chart was drawn: not blank, in more than one colour. Run by cli/tests/report.rs with
// REPORT_HTML and SHOT.
import fs from "node:fs";
import { checker, openOffline } from "./page.mjs";

const { REPORT_HTML, SHOT } = process.env;

const check = checker("report page");

const { browser, ctx, tab, requested } = await openOffline(REPORT_HTML);
try {
  check("fetches nothing", requested.length === 0, requested);
  const charts = await tab.$$("svg");
  check("has charts", charts.length >= 2, `${charts.length} svg elements`);
  await tab.screenshot({ path: SHOT, fullPage: true });
  check("screenshot written", fs.statSync(SHOT).size > 10000, `${fs.statSync(SHOT).size} bytes`);

  // Each chart's pixels, read back in a canvas of a blank page.
  const reader = await ctx.newPage();
  let i = 0;
  for (const chart of charts) {
    i += 1;
    const box = await chart.boundingBox();
    check(`chart ${i} has a size`, box && box.width > 20 && box.height > 20, box);
    const png = await chart.screenshot();
    const stats = await reader.evaluate(async (b64) => {
      const img = new Image();
      img.src = "data:image/png;base64," + b64;
      await img.decode();
      const c = document.createElement("canvas");
      c.width = img.width; c.height = img.height;
      const g = c.getContext("2d");
      g.drawImage(img, 0, 0);
      const d = g.getImageData(0, 0, c.width, c.height).data;
      const bg = [d[0], d[1], d[2]];
      let drawn = 0;
      const colours = new Set();
      for (let p = 0; p < d.length; p += 4) {
        if (Math.abs(d[p] - bg[0]) + Math.abs(d[p + 1] - bg[1]) + Math.abs(d[p + 2] - bg[2]) > 30) drawn += 1;
        colours.add((d[p] >> 4) * 256 + (d[p + 1] >> 4) * 16 + (d[p + 2] >> 4));
      }
      return { drawn: drawn / (d.length / 4), colours: colours.size, w: c.width, h: c.height };
    }, png.toString("base64"));
    console.log(`chart ${i}: ${stats.w}x${stats.h} px, ${(stats.drawn * 100).toFixed(1)}% drawn, ${stats.colours} colours`);
    check(`chart ${i} is drawn`, stats.drawn > 0.01 && stats.colours >= 3, stats);
  }
  console.log("report page: all passed");
} finally {
  await browser.close();
}
