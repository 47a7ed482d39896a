// Prints the figures recorded by a torture run ($SLOWLANE_TORTURE_REPORT,
// JSON lines from tlib.mjs figures()) as Markdown, one table per part: the
// raw material of docs/RELIABILITY.md.
import fs from 'node:fs';

const file = process.argv[2];
const rows = fs.existsSync(file)
  ? fs.readFileSync(file, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l)) : [];
const fmt = (v) => (typeof v === 'object' && v !== null ? `\`${JSON.stringify(v)}\`` : String(v));
for (const r of rows) {
  const { part, profile, at, ...rest } = r;
  console.log(`\n### ${part} (${profile} profile, ${at})\n\n| figure | value |\n|---|---|`);
  for (const [k, v] of Object.entries(rest)) console.log(`| ${k} | ${fmt(v).replace(/\|/g, '\\|')} |`);
}
