/** Host ports on 127.0.0.1 forwarded to guests' SSH (user networking), reserved while a create runs. */
import { ServiceError } from "../api-types/errors.ts";

export class SshPortReservations {
  private readonly reserved = new Set<number>();

  /** A free port not in `used` (ports VMs already have) nor reserved by a create in progress. */
  allocate(used: Set<number>): number {
    for (let attempt = 0; attempt < 50; attempt++) {
      const listener = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      const port = listener.port;
      listener.stop(true);
      if (!used.has(port) && !this.reserved.has(port)) {
        this.reserved.add(port);
        return port;
      }
    }
    throw new ServiceError("internal_error", "could not find a free port on 127.0.0.1 for SSH forwarding");
  }

  release(port: number): void {
    this.reserved.delete(port);
  }
}
