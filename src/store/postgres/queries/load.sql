SELECT state FROM conversations WHERE id = $1
