/**
 * Stunning rogue processes (Clark et al. 2005, §5.5): in the final pre-copy rounds, ask the guest
 * through its migration-assist channel (assist.ts, docs/assist.md) to suspend the tasks that dirty
 * memory faster than a budget, so the last rounds converge; they resume after the migration (on
 * the destination, or here if it fails). Write rates come from the dirty log over each task's
 * pages. A guest without the channel is migrated as usual, with a note in the report.
 */
import { PAGE_SIZE } from '../machine/memory/layout.js';
import type { DirtyLog } from '../machine/memory/dirty-log.js';
import type { Logger } from '../util/log.js';
import { errorText } from './errors.js';
import { ASSIST_PORT, AssistType, TASK_RESULT_NAMES, TaskResult, assistExchange, type TaskInfo } from './assist.js';
import type { SwitchoverDecision } from './switchover.js';
import type { GuestChannel } from './vm-port.js';

/** HELLO config key: the source stunned (or may have stunned) tasks; the destination resumes them after activation. */
export const STUN_CONFIG_KEY = 'stunAssist';
/** How long one exchange with the guest may take. */
export const ASSIST_TIMEOUT_MS = 2000;
/** Default budget: this fraction of the bandwidth stop-and-copy can expect. */
export const DEFAULT_BUDGET_FRACTION = 0.25;

/** One task in one round (perRound[].tasks). */
export interface TaskRoundStats {
  id: number;
  name: string;
  /** Pages of the task dirtied since the previous sync, as bytes per second. */
  writeRateBps: number;
  /** Stunned during this round (or right after it). */
  stunned: boolean;
}

export interface StunTaskReport {
  id: number;
  name: string;
  exempt: boolean;
  pages: number;
  /** The write rate measured in the round that decided, bytes per second. */
  writeRateBps: number;
  stunned: boolean;
}

/** What stunning did (the report's `stun`). */
export interface StunReport {
  /** stunned; not-needed (pre-copy converged, or no task over budget); unavailable (no channel: see note). */
  outcome: 'stunned' | 'not-needed' | 'unavailable';
  note?: string;
  /** The budget that applied, bytes per second. */
  budgetBps: number;
  /** The live round after which the tasks were stunned. */
  round?: number;
  tasks: StunTaskReport[];
  /** After a failed or cancelled migration: the tasks resumed here. */
  resumedOnSource?: string[];
}

export interface StunnerOptions {
  readonly connect: () => GuestChannel | undefined;
  readonly ramPages: number;
  /** 0 or undefined: DEFAULT_BUDGET_FRACTION of the stop-and-copy bandwidth. */
  readonly budgetBps?: number;
  readonly log: Logger;
  readonly timeoutMs?: number;
}

/** The stunning policy and its conversation with the guest, for one outgoing migration. */
export class Stunner {
  private tasks: TaskInfo[] | undefined;
  private unavailable: string | undefined;
  private query: Promise<void> | undefined;
  private rates = new Map<number, number>();
  private budget = 0;
  private stunnedIds: number[] = [];
  private stunRound: number | undefined;
  private decidedRates = new Map<number, number>();
  private resumedHere: string[] | undefined;
  /** The STUN exchange in flight (a resume waits for it: the guest serves one connection at a time). */
  private stunning: Promise<boolean> | undefined;

  constructor(private readonly o: StunnerOptions) {
    this.budget = o.budgetBps ?? 0;
  }

  /** Asks the guest for its task table, in the background (pre-copy goes on meanwhile). */
  start(): void {
    this.query ??= this.exchange(undefined).then(
      (out) => {
        this.tasks = out.tasks;
        this.o.log.info({ tasks: out.tasks.map((t) => `${t.id}:${t.name}${t.exempt ? '(exempt)' : ''}`) }, 'stun: the guest task table');
      },
      (e: unknown) => {
        this.unavailable = errorText(e);
        this.o.log.info({ why: this.unavailable }, 'stun: no migration-assist channel; stunning is skipped');
      },
    );
  }

  get hasStunned(): boolean {
    return this.stunnedIds.length > 0;
  }

  /** Each task's write rate since the last sync, from the dirty marks not yet taken; undefined before the table arrives. */
  measure(dirty: DirtyLog, sinceMs: number): TaskRoundStats[] | undefined {
    if (this.tasks === undefined) return undefined;
    const ms = Math.max(sinceMs, 0.001);
    return this.tasks.map((t) => {
      let pages = 0;
      for (const r of t.ranges) pages += dirty.countIn(r.firstPage, r.pages);
      const rate = Math.round((pages * PAGE_SIZE * 1000) / ms);
      this.rates.set(t.id, rate);
      return { id: t.id, name: t.name, writeRateBps: rate, stunned: this.stunnedIds.includes(t.id) };
    });
  }

  /**
   * Whether to stun now, at the end of a live round (docs/precopy.md): once, when the switchover
   * policy gives up on convergence, or from round 2 on when the expected downtime is over the
   * limit and the round did not halve the dirty set.
   */
  wants(round: number, decision: SwitchoverDecision, limitMs: number): boolean {
    if (this.stunRound !== undefined || this.tasks === undefined) return false;
    const { reason } = decision;
    if (reason === 'not-converging' || reason === 'max-rounds') return true;
    return reason === undefined && round >= 2 && decision.expectedDowntimeMs > limitMs && !decision.halved;
  }

  /**
   * Stuns the non-exempt tasks over budget (measured in the round that just ended). True if
   * the guest stunned any. `bandwidthBps` sets the default budget.
   */
  stun(round: number, bandwidthBps: number): Promise<boolean> {
    this.stunning = this.stunOnce(round, bandwidthBps);
    return this.stunning;
  }

  private async stunOnce(round: number, bandwidthBps: number): Promise<boolean> {
    if (this.o.budgetBps === undefined || this.o.budgetBps <= 0) this.budget = Math.round(bandwidthBps * DEFAULT_BUDGET_FRACTION);
    const over = (this.tasks ?? []).filter((t) => !t.exempt && (this.rates.get(t.id) ?? 0) > this.budget);
    if (over.length === 0) return false;
    this.stunRound = round;
    this.decidedRates = new Map(this.rates);
    const wanted = new Map(over.map((t) => [t.id, t.name]));
    try {
      const out = await this.exchange({
        type: AssistType.Stun,
        // The same tasks in the table the guest sends now (a task is its id and name).
        ids: (now) => now.filter((t) => wanted.get(t.id) === t.name).map((t) => t.id),
      });
      this.tasks = out.tasks;
      for (const d of out.done ?? []) if (d.result === TaskResult.Done || d.result === TaskResult.Already) this.stunnedIds.push(d.id);
      const results = (out.done ?? []).map((d) => `${this.nameOf(d.id)}:${TASK_RESULT_NAMES[d.result]}`);
      this.o.log.info({ round, budgetBps: this.budget, results }, 'stun: rogue tasks stunned');
    } catch (e) {
      this.o.log.warn({ round, err: errorText(e) }, 'stun: the guest did not stun its tasks');
      this.unavailable = `STUN after round ${round} failed: ${errorText(e)}`;
    }
    return this.stunnedIds.length > 0;
  }

  /** The migration failed or was cancelled and the VM runs here again: resume what was stunned. */
  async resumeOnSource(): Promise<void> {
    await this.stunning;
    if (this.stunnedIds.length === 0) return;
    try {
      const out = await this.exchange({ type: AssistType.Resume, ids: () => [] });
      this.resumedHere = (out.done ?? []).filter((d) => d.result === TaskResult.Done).map((d) => this.nameOf(d.id));
      this.o.log.info({ resumed: this.resumedHere }, 'stun: the migration did not complete; stunned tasks resumed on the source');
    } catch (e) {
      this.resumedHere = [];
      this.o.log.error({ err: errorText(e) }, 'stun: could not resume the stunned tasks on the source');
    }
  }

  /** Stunned task names, for the round's entry. */
  stunnedNames(): string[] {
    return this.stunnedIds.map((id) => this.nameOf(id));
  }

  report(): StunReport {
    const tasks = (this.tasks ?? []).map((t) => ({
      id: t.id,
      name: t.name,
      exempt: t.exempt,
      pages: t.ranges.reduce((a, r) => a + r.pages, 0),
      writeRateBps: (this.stunRound !== undefined ? this.decidedRates : this.rates).get(t.id) ?? 0,
      stunned: this.stunnedIds.includes(t.id),
    }));
    const r: StunReport = {
      outcome: this.stunnedIds.length > 0 ? 'stunned' : this.tasks === undefined ? 'unavailable' : 'not-needed',
      budgetBps: this.budget,
      tasks,
    };
    if (this.unavailable !== undefined) r.note = this.unavailable;
    else if (this.tasks === undefined) r.note = 'the guest task table had not arrived when pre-copy ended';
    if (this.stunRound !== undefined) r.round = this.stunRound;
    if (this.resumedHere !== undefined) r.resumedOnSource = this.resumedHere;
    return r;
  }

  private nameOf(id: number): string {
    return this.tasks?.find((t) => t.id === id)?.name ?? `#${id}`;
  }

  private exchange(command: Parameters<typeof assistExchange>[2]) {
    return assistExchange(this.o.connect, this.o.ramPages, command, this.o.timeoutMs ?? ASSIST_TIMEOUT_MS);
  }
}

/**
 * The destination, after activation: resume every task the source stunned (their flags came
 * along in guest memory). Never throws; returns the names resumed.
 */
export async function resumeStunnedTasks(vm: { readonly name: string; connectGuest?(port: number): GuestChannel | undefined; readonly ram: { readonly pageCount: number } }, log: Logger): Promise<string[]> {
  try {
    const out = await assistExchange(() => vm.connectGuest?.(ASSIST_PORT), vm.ram.pageCount, { type: AssistType.Resume, ids: () => [] }, ASSIST_TIMEOUT_MS);
    const names = (out.done ?? []).filter((d) => d.result === TaskResult.Done).map((d) => out.tasks.find((t) => t.id === d.id)?.name ?? `#${d.id}`);
    log.info({ vm: vm.name, resumed: names }, 'stun: stunned tasks resumed after the migration');
    return names;
  } catch (e) {
    log.info({ vm: vm.name, why: errorText(e) }, 'stun: nothing resumed after the migration (no migration-assist channel)');
    return [];
  }
}
