// `boxlite run -p [[HOST_IP:]HOST:]GUEST[/tcp|udp]` → a PortSpec (docker's -p, IPv4 only).
import { ConfigError, type PortSpec } from '../index.js';

export function parsePublishFlag(spec: string): PortSpec {
  const m = /^(?:(?:(\d{1,3}(?:\.\d{1,3}){3}):)?(\d*):)?(\d+)(?:\/(tcp|udp))?$/.exec(spec);
  if (!m) throw new ConfigError(`-p ${JSON.stringify(spec)} is not [[HOST_IP:]HOST:]GUEST[/tcp|udp]`);
  const port: PortSpec = { guestPort: Number(m[3]), protocol: (m[4] as 'tcp' | 'udp' | undefined) ?? 'tcp' };
  if (m[2]) port.hostPort = Number(m[2]);
  if (m[1]) port.hostIp = m[1];
  return port;
}
