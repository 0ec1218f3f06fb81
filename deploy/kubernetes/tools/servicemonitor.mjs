// Validates ServiceMonitor documents (JSON files named on the command line) against the prometheus-operator CRD's
// schema as @kubernetes-models/prometheus-operator compiles it. Prints each error; exits 1 if any.
import { readFileSync } from "node:fs";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";

let failed = 0;
for (const file of process.argv.slice(2)) {
  const doc = JSON.parse(readFileSync(file, "utf8"));
  try {
    new ServiceMonitor(doc).validate();
    console.log(`ok: ${file} (ServiceMonitor ${doc.metadata?.name})`);
  } catch (e) {
    failed++;
    console.log(`FAIL: ${file} (ServiceMonitor ${doc.metadata?.name}): ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
