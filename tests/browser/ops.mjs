// Drives the API's /ops page in Debian's chromium through playwright-core
// (never a downloaded browser): sign in with an operator key, find the dead
// job, screenshot the dashboard, click Retry and wait until the workers have
// really run it (the row shows SUCCEEDED).
//
//   node tests/browser/ops.mjs <base url> <operator key> <screenshot.png>
//
// Prints one JSON line with what it saw; exits non-zero on any failure.
// CHROMIUM overrides the browser path (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const [base, key, screenshot] = process.argv.slice(2);
if (!base || !key || !screenshot) {
  console.error("usage: node ops.mjs <base url> <operator key> <screenshot.png>");
  process.exit(2);
}
const deadline = setTimeout(() => {
  console.error("ops.mjs: gave up after 150 s");
  process.exit(1);
}, 150_000);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
let failed = false;
try {
  const context = await browser.newContext({ viewport: { width: 1360, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const problems = [];
  page.on("pageerror", (e) => problems.push("page error: " + e.message));
  page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
  // Nothing may leave the machine: the page is self-contained.
  const origin = new URL(base).origin;
  await page.route("**/*", (route) =>
    new URL(route.request().url()).origin === origin ? route.continue() : (problems.push("external request: " + route.request().url()), route.abort()));

  await page.goto(base.replace(/\/$/, "") + "/ops");
  if (!(await page.title()).includes("Valora Operations")) throw new Error("unexpected title " + (await page.title()));

  // A wrong key is refused with a message, and the sign-in form stays.
  await page.fill("#key", "vk_not_a_key");
  await page.click("#login-button");
  await page.waitForFunction(() => document.querySelector("#login-error").textContent.length > 0, null, { timeout: 15_000 });
  const refused = await page.textContent("#login-error");

  await page.fill("#key", key);
  await page.click("#login-button");
  const deadRow = page.locator('#jobs tbody tr[data-state="DEAD"]').first();
  await deadRow.waitFor({ timeout: 30_000 });
  const id = await deadRow.getAttribute("data-id");
  const jobKey = await deadRow.getAttribute("data-key");
  const lastError = (await deadRow.locator("td.err").textContent()).trim();
  const kind = jobKey.split(":")[0];
  const deadCount = await page.getAttribute(`#queues tr[data-queue="${kind}"] td[data-state="DEAD"]`, "data-count");
  const states = await page.$$eval("#jobs tbody tr[data-state]", (rows) => [...new Set(rows.map((r) => r.dataset.state))]);
  const firstState = states[0];
  await page.mouse.move(0, 0); // no hover highlight in the picture
  await page.screenshot({ path: screenshot, fullPage: true });

  await deadRow.locator('button[data-action="retry"]').click();
  const row = page.locator(`#jobs tbody tr[data-id="${id}"]`);
  await page.locator(`#jobs tbody tr[data-id="${id}"][data-state="SUCCEEDED"]`).waitFor({ timeout: 90_000 });
  const attempts = (await row.locator("td.num").textContent()).trim();
  const toast = await page.textContent("#toast");
  const remaining = await page.locator('#jobs tbody tr[data-state="DEAD"]').count();
  if (problems.length) throw new Error(problems.join("\n"));
  console.log(JSON.stringify({ refused, id, key: jobKey, lastError, deadCount, states, firstState, toast, attempts, remaining }));
} catch (error) {
  failed = true;
  console.error("ops.mjs:", error && error.stack ? error.stack : error);
} finally {
  await browser.close();
  clearTimeout(deadline);
}
process.exit(failed ? 1 : 0);
