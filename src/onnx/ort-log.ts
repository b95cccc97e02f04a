/**
 * ONNX Runtime logs at warning level by default and warns, for instance, about every unused constant
 * that torch.onnx leaves in a graph: noise a user cannot act on. Sessions log errors only.
 */
export const ORT_LOG = { logSeverityLevel: 3 } as const;
