/**
 * Prints each failed test of a `bun test --reporter=junit` file with its message, so the end
 * of a CI log (often all that is kept) says why a test failed, not only which.
 * Usage: bun scripts/lib/failures.ts junit.xml
 */
import { existsSync, readFileSync } from "node:fs";
import { XMLParser } from "fast-xml-parser";

const MAX_CHARS = 4000; // per failure: enough for a diff or a server error, not a whole log

interface Failure {
  "#text"?: string;
  "@_message"?: string;
}
interface TestCase {
  "@_name": string;
  "@_file"?: string;
  "@_line"?: string;
  failure?: Failure | Failure[];
}
interface Suite {
  "@_name"?: string;
  "@_file"?: string;
  testcase?: TestCase | TestCase[];
  testsuite?: Suite | Suite[];
}

const asList = <T>(v: T | T[] | undefined): T[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

function* failed(suite: Suite, path: string[]): Generator<{ where: string; test: string; text: string }> {
  for (const tc of asList(suite.testcase)) {
    for (const f of asList(tc.failure)) {
      const where = `${tc["@_file"] ?? suite["@_file"] ?? "?"}:${tc["@_line"] ?? "?"}`;
      yield { where, test: [...path, tc["@_name"]].join(" > "), text: String(f["#text"] ?? f["@_message"] ?? "") };
    }
  }
  // describe blocks are suites nested in the file's suite: their names lead the test's.
  for (const s of asList(suite.testsuite)) yield* failed(s, [...path, s["@_name"] ?? ""]);
}

const file = process.argv[2];
if (!file || !existsSync(file)) process.exit(0); // bun did not get far enough to write it
const doc = new XMLParser({ ignoreAttributes: false, processEntities: true, htmlEntities: true }).parse(readFileSync(file, "utf8")) as { testsuites?: Suite };
const files = asList(doc.testsuites?.testsuite);
const failures = files.flatMap((f) => [...failed(f, [])]);
if (failures.length === 0) process.exit(0);
console.log(`\n=== ${failures.length} failed test(s), with their messages ===`);
for (const f of failures) {
  const text = f.text.length > MAX_CHARS ? `${f.text.slice(0, MAX_CHARS)}\n… (${f.text.length - MAX_CHARS} more characters)` : f.text;
  console.log(`\n--- ${f.test}\n    at ${f.where}\n${text.trimEnd()}`);
}
