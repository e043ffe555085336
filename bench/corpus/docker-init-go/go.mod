module example.com/docker-init-go

go 1.19
