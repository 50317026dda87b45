/** An error the router answers with a status and a clear JSON body. */
export class DataplaneError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'DataplaneError';
  }
}
