// Shared by the page checks (report_page.mjs, record_page.mjs): a check that exits on failure,
// and a page of Meridian's opened from a file in headless Chromium (Debian's, driven by
// playwright-core) with the network off, every request it makes recorded.
import { chromium } from "playwright-core";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";

export function checker(what) {
  return function check(name, cond, detail = "") {
    if (!cond) {
      console.error(`FAIL ${what} ${name}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
      process.exit(1);
    }
    console.log(`ok   ${what} ${name}`);
  };
}

export async function openOffline(file) {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
    timeout: 60000,
  });
  try {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 900 }, offline: true });
    const tab = await ctx.newPage();
    const requested = [];
    tab.on("request", (r) => { if (!r.url().startsWith("file:")) requested.push(r.url()); });
    await tab.goto("file://" + file, { waitUntil: "load", timeout: 60000 });
    return { browser, ctx, tab, requested };
  } catch (e) {
    await browser.close();
    throw e;
  }
}
