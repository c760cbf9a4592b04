/** QemuOpts values (`-drive file=…`, `-chardev path=…`): a comma is written as two. Shared by both drivers. */
export function optValue(v: string): string {
  return v.replaceAll(",", ",,");
}
