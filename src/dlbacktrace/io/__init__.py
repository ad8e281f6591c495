"""Reading inputs (one InputKind per modality) and loading models without pickle."""
