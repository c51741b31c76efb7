// Opens `meridian report --record --html`'s page in headless Chromium (Debian's, driven by
// playwright-core) from a file, with the network off, and reads back what it shows: every
// recipient's processing and storage locations and request count, the transfers to third
// countries with their safeguards, the personal-data categories and the purposes per tenant,
// against EXPECT (JSON, computed by cli/tests/record.rs from the log it generated). Takes a
// screenshot (SHOT). Run by cli/tests/record.rs with RECORD_HTML, EXPECT and SHOT.
import fs from "node:fs";
import { checker, openOffline } from "./page.mjs";

const { RECORD_HTML, EXPECT, SHOT } = process.env;
const want = JSON.parse(EXPECT);

const check = checker("record page");

const { browser, ctx, tab, requested } = await openOffline(RECORD_HTML);
try {
  check("fetches nothing", requested.length === 0, requested);
  const shown = await tab.evaluate(() => {
    const rows = (sel, key) => Object.fromEntries([...document.querySelectorAll(sel)].map((tr) => [
      tr.getAttribute(key),
      Object.fromEntries([...tr.querySelectorAll("td[class]")].map((td) => [td.className.split(" ")[0], td.textContent])),
    ]));
    return {
      controller: document.getElementById("controller").textContent,
      requests: document.getElementById("requests").textContent,
      recipients: rows("tr[data-recipient]", "data-recipient"),
      transfers: rows("tr[data-transfer]", "data-transfer"),
      kinds: rows("tr[data-kind]", "data-kind"),
      tenants: rows("tr[data-tenant]", "data-tenant"),
      visible: document.getElementById("transfers")?.getBoundingClientRect().height > 0,
    };
  });
  check("controller", shown.controller === want.controller, shown.controller);
  check("requests", shown.requests === String(want.requests), shown.requests);
  for (const [id, r] of Object.entries(want.recipients)) {
    const s = shown.recipients[id];
    check(`recipient ${id}`, s && s.processes === r.processes && s.stores === r.stores && s.requests === String(r.requests), { shown: s, want: r });
  }
  check("no other recipient", Object.keys(shown.recipients).length === Object.keys(want.recipients).length, Object.keys(shown.recipients));
  for (const [id, t] of Object.entries(want.transfers)) {
    const s = shown.transfers[id];
    check(`transfer ${id}`, s && s.safeguard.includes(t.safeguard) && s.requests === String(t.requests), { shown: s, want: t });
  }
  check("no other transfer", Object.keys(shown.transfers).length === Object.keys(want.transfers).length, Object.keys(shown.transfers));
  check("transfers table is laid out", shown.visible);
  for (const [kind, n] of Object.entries(want.kinds)) {
    check(`personal data ${kind}`, shown.kinds[kind]?.count === String(n), shown.kinds[kind]);
  }
  for (const [tenant, n] of Object.entries(want.tenants)) {
    check(`tenant ${tenant}`, shown.tenants[tenant]?.requests === String(n), shown.tenants[tenant]);
  }
  await tab.screenshot({ path: SHOT, fullPage: true });
  check("screenshot written", fs.statSync(SHOT).size > 10000, `${fs.statSync(SHOT).size} bytes`);
  console.log("record page: all passed");
} finally {
  await browser.close();
}
