# nginx wrapper in Let's Encrypt mode (inlined into docker-compose.yml as the nginx command): reload nginx
# gracefully when certbot's deploy hook appends to /etc/letsencrypt/kheops/renewed, so a renewed certificate is
# served without a restart or a dropped connection. Polls every 10 s: cheap, and no inotify in the image.
marker=/etc/letsencrypt/kheops/renewed
stamp() { wc -c < "$marker" 2>/dev/null || echo 0; }
(
    last=$(stamp)
    while sleep 10; do
        now=$(stamp)
        if [ "$now" != "$last" ]; then
            last=$now
            echo "kheops: certificate renewed, reloading nginx"
            nginx -s reload
        fi
    done
) &
exec nginx -g 'daemon off;'
