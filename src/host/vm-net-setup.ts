/**
 * Wiring a hosted VM to its gateway: the API's `expose`/`gateway` fields checked, the VM's
 * VmNetwork built over its vsock device and joined to this host's link to that gateway.
 */
import type { Logger } from '../util/log.js';
import { GatewayClients } from '../net/gateway-client.js';
import { decodeEndpointState } from '../net/vsock-endpoint.js';
import { NetConfigError, VmNetwork, checkExposures, decodeNetState, parseExposure, type NetConfig } from '../net/vm-network.js';
import { formatHostPort, parseHostPort } from './address.js';
import { ApiFailure } from './errors.js';
import type { HostedVm } from './hosted-vm.js';

/** The network part of a new VM: where its gateway is and what it exposes (epoch 0). */
export interface NewVmNetwork {
  readonly gateway: string;
  readonly exposures: NetConfig['exposures'];
}

/** The host's gateway links, one set per host (made on first use). */
const linksOf = new WeakMap<object, GatewayClients>();

export function gatewayLinks(host: { readonly name: string; readonly log: Logger }): GatewayClients {
  let g = linksOf.get(host);
  if (g === undefined) {
    g = new GatewayClients(host.name, host.log);
    linksOf.set(host, g);
  }
  return g;
}

/** Normalizes a gateway address (host:port) or throws a NetConfigError. */
export function normalizeGateway(text: string): string {
  try {
    return formatHostPort(parseHostPort(text, 'gateway'));
  } catch (e) {
    throw new NetConfigError((e as Error).message);
  }
}

/** Checks POST /v1/vms's expose/gateway; undefined when the VM has no gateway. */
export function newVmNetwork(body: { expose?: string[]; gateway?: string }): NewVmNetwork | undefined {
  try {
    const exposures = (body.expose ?? []).map((x, i) => parseExposure(x, `expose[${i}]`));
    checkExposures(exposures);
    if (body.gateway === undefined) {
      if (exposures.length > 0) throw new NetConfigError("'expose' needs 'gateway' (the gateway that listens on those ports)");
      return undefined;
    }
    return { gateway: normalizeGateway(body.gateway), exposures };
  } catch (e) {
    if (e instanceof NetConfigError) throw ApiFailure.badRequest(`POST /v1/vms: ${e.message}`);
    throw e;
  }
}

/** Gives `vm` its network and announces it (`endpointState`: restored from a migration). */
export function attachNetwork(host: { readonly name: string; readonly log: Logger }, vm: HostedVm, config: NetConfig, endpointState?: Uint8Array): VmNetwork {
  const port = vm.vcpu.vsock;
  if (port === undefined) throw new ApiFailure(400, 'bad-request', `VM ${vm.name} has no virtio-vsock device; it cannot use a gateway`);
  const client = config.gateway !== undefined ? gatewayLinks(host).get(parseHostPort(config.gateway, 'gateway')) : undefined;
  const net = new VmNetwork(vm.uuid, vm.name, config, port, client, host.log.child({ vm: vm.name }));
  if (endpointState !== undefined) net.endpoint.restoreState(endpointState);
  vm.network = net;
  net.start();
  return net;
}

/** Splits a migrated network section; the location epoch moves on by one (this is a new location). */
export function arrivedNetwork(section: Uint8Array): { config: NetConfig; endpoint: Uint8Array } {
  const { config, endpoint } = decodeNetState(section);
  decodeEndpointState(endpoint); // refused now, before commitment, rather than at activation
  return { config: { ...config, epoch: (config.epoch + 1) >>> 0 }, endpoint };
}

/** Starts dialing the gateway an arriving VM uses, so the link is up by activation. */
export function preconnect(host: { readonly name: string; readonly log: Logger }, gateway: unknown): void {
  if (typeof gateway !== 'string') return;
  try {
    gatewayLinks(host).get(parseHostPort(gateway, 'gateway')).ensure();
  } catch {
    // A bad address surfaces at activation.
  }
}
