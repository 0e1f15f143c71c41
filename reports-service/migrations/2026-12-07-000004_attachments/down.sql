DROP TABLE reports.attachments;
