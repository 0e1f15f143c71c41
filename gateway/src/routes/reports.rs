//! `/v1/reports…` and `/v1/admin/reports…`: a reporter's own incident reports and the moderators'
//! queue, over reports-service.
