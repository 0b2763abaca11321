/**
 * The one error the Hub module raises: `kind` says what the user can do about it (set a token,
 * fix the id, go offline, free disk), `status` and `url` say what the server answered.
 */
export type HubErrorKind = 'not-found' | 'unauthorized' | 'revision' | 'network' | 'checksum' | 'offline-miss' | 'disk';

export class HubError extends Error {
  readonly kind: HubErrorKind;
  readonly status?: number;
  readonly url?: string;

  constructor(kind: HubErrorKind, message: string, at: { status?: number; url?: string } = {}) {
    super(message);
    this.name = 'HubError';
    this.kind = kind;
    this.status = at.status;
    this.url = at.url;
  }
}
